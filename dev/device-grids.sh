#!/usr/bin/env bash
# Runs what is left of the converged translation grids on a lent GPU machine (no network), all runs side by side
# on its one GPU, then copies each finished run's small files (the ones git keeps, .gitignore) to $OUT/results.
# Needs .device-kit/ (dev/device-kit.sh) carried with the working tree. On this workplace's device tool:
#   run(command="bash dev/device-grids.sh 480", carry=[".device-kit"], timeout_s=590)
# then copy the returned results/ over the checkout's (stop the CPU grids first), commit, and refresh each grid's
# report with --report_only. A run still going when the budget (seconds, default 480) ends keeps its checkpoints
# on the device only while it stays warm (30 s): calling the script again at once (after copying the returned
# results/ into the checkout, so that the finished runs are not redone) resumes those runs from them.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-480}
out=${OUT:-/tmp/device-out}
site=/tmp/hf-losses-site
python=${PYTHON:-python3}
grids=${GRIDS-multi30k-de-en-converged multi30k-fr-en-converged}
started=$(date +%s)
mkdir -p "$out" && rm -rf "$site"
$python -m pip install --quiet --no-index --no-deps --target "$site" .device-kit/wheels/*.whl
$python -m pip install --quiet --no-index --no-deps --no-build-isolation --upgrade --target "$site" .
export PYTHONPATH=$site HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1
# the recipes read ../shared/data/multi30k: point it at the carried copy
if [ ! -e ../shared/data/multi30k ]; then
    mkdir -p ../shared/data && ln -s "$PWD/.device-kit/data/multi30k" ../shared/data/multi30k
fi
$python - <<'PY' | tee "$out/device.txt"
import torch, transformers, datasets, hf_losses
print(f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; torch {torch.__version__}, transformers {transformers.__version__}, "
      f"datasets {datasets.__version__}, hf_losses {hf_losses.__version__}")
PY
left=$((budget - $(date +%s) + started))
if [ "$left" -lt 60 ]; then echo "only $left s of the $budget s left after the set-up: no run started" >&2; exit 1; fi
for grid in $grids; do
    recipe=scripts/recipes/compare-$grid.yaml
    jobs=$($python scripts/compare.py "$recipe" --output_dir "results/$grid" --dry_run | wc -l)
    [ "$jobs" -gt 0 ] || continue
    echo "$grid: $jobs runs, $left s" | tee -a "$out/device.txt"
    timeout "$left" $python scripts/compare.py "$recipe" --output_dir "results/$grid" --no_progress --no_figures \
        --set use_cpu=false --devices 0 --jobs "$jobs" > "$out/$grid.log" 2>&1 &
done
wait || true
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >> "$out/device.txt" || true
# each finished run's small files, as git keeps them
for done in $(for grid in $grids; do ls results/"$grid"/*/seed-*/compare_done.json 2>/dev/null; done); do
    run=$(dirname "$done")
    mkdir -p "$out/$run"
    for f in "$run"/compare_* "$run"/*results.json "$run"/trainer_state.json "$run"/*_predictions.txt \
        "$run"/*_references.txt "$run"/*_calibration.json "$run"/*_scores.npz "$run"/README.md; do
        [ -f "$f" ] && cp "$f" "$out/$run/"
    done
done
echo "finished runs copied: $(ls -d "$out"/results/*/*/seed-* 2>/dev/null | wc -l)" | tee -a "$out/device.txt"
# the runs cut off by the budget, with their last checkpoint (kept on the device while it stays warm)
for grid in $grids; do
    for run in results/"$grid"/*/seed-*; do
        [ -f "$run/compare_done.json" ] || [ ! -f "$run/compare_flags.json" ] || \
            echo "unfinished: $run at $(ls -d "$run"/checkpoint-* 2>/dev/null | xargs -r -n1 basename | sort -t- -k2 -n | tail -n 1)"
    done
done | tee -a "$out/device.txt"
