"""scripts/compare.py and hf_losses.apps.compare: grid errors, resumable runs, aggregation, significance, report.

The runner's mechanics are tested against a stand-in for ``python -m hf_losses`` (a few lines of Python that
write the files a real run writes, in milliseconds); the grids' flags are still checked by the real parsers.
One test (slow) runs a real 2 x 2 grid of translate runs on tiny data and resumes a killed run.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_losses.apps.compare import GridError, load_grid, main, parse_grid, runner
from hf_losses.apps.compare.aggregate import BOOTSTRAP_TEST
from hf_losses.apps.compare.report import summary_table
from hf_losses.apps.compare.significance import (
    multilabel_paired_bootstrap,
    sacrebleu_paired_bootstrap,
    seed_t_test,
    weighted_multilabel_metrics,
)
from hf_losses.metrics import multilabel_metrics

ROOT = Path(__file__).resolve().parents[2]
compare_main = importlib.import_module(
    "hf_losses.apps.compare.main"
)  # the module; the package exports main()

# ------------------------------------------------------------------------------------------ grid files

GOOD = {
    "task": "translation",
    "seeds": [1, 2],
    "baseline": "ce",
    "args": {"max_steps": 2, "do_train": True, "text_column": ["title", "body"]},
    "variants": {"ce": {"loss": "ce"}, "cel": {"loss": "cel", "log_end": 0.5}},
}


def test_grid_command_order_and_values(tmp_path):
    grid = parse_grid(GOOD)
    assert grid.runs() == [("ce", 1), ("cel", 1), ("ce", 2), ("cel", 2)]
    assert grid.argv("cel", 2, tmp_path / "cel" / "seed-2") == [
        "translate", "--max_steps", "2", "--do_train", "true", "--text_column", "title", "body",
        "--loss", "cel", "--log_end", "0.5", "--seed", "2", "--output_dir", str(tmp_path / "cel" / "seed-2"),
    ]  # fmt: skip


def test_a_variant_can_run_fewer_seeds_in_the_grid_order():
    grid = parse_grid({**GOOD, "seeds": [1, 2, 3], "variant_seeds": {"cel": [3, 1]}})
    assert grid.seeds_of("cel") == (1, 3) and grid.seeds_of("ce") == (1, 2, 3)
    assert grid.runs() == [("ce", 1), ("cel", 1), ("ce", 2), ("ce", 3), ("cel", 3)]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "summarization"}, "task must be one of translation, classification"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
        ({"seeds": "1"}, "seeds must be a non-empty list"),
        ({"baseline": "el"}, "baseline 'el' is not a variant"),
        ({"variants": {"ce": {}}}, "at least two"),
        ({"variants": {"ce": {}, "a b": {}}}, "variant name 'a b'"),
        ({"args": {"seed": 3}}, "--seed is set by the runner"),
        ({"args": {"output_dir": "x"}}, "--output_dir is set by the runner"),
        ({"args": {"max-steps": 3}}, "is not a flag name"),
        ({"args": {"loss": {"a": 1}}}, "values must be strings, numbers, booleans"),
        ({"args": ["--loss", "ce"]}, "args must be a mapping"),
        ({"variant": {}}, "unknown key(s) variant"),
        ({"variant_seeds": {"el": [1]}}, "variant_seeds.el is not a variant"),
        (
            {"variant_seeds": {"cel": [3]}},
            "variant_seeds.cel must be a non-empty list of distinct seeds out of [1, 2]",
        ),
        ({"variant_seeds": {"cel": []}}, "variant_seeds.cel must be a non-empty list"),
        ({"variant_seeds": [1]}, "variant_seeds must map variant names to lists of seeds"),
        ({"start_from": "a/{variant}/seed-{step}"}, "only {variant} and {seed} are filled in; got"),
        ({"start_from": "a/{0}"}, "start_from must be a checkpoint path"),
        ({"start_from": ["a"]}, "start_from must be a checkpoint path"),
    ],
)
def test_bad_grids_give_one_line_errors(change, message):
    with pytest.raises(GridError) as info:
        parse_grid({**GOOD, **change})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_keys_and_bad_files(tmp_path):
    with pytest.raises(GridError, match="missing key"):
        parse_grid({"task": "translation"})
    with pytest.raises(GridError, match="does not exist"):
        load_grid(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [translation\n")
    with pytest.raises(GridError, match="not valid YAML"):
        load_grid(bad)


def test_main_reports_a_bad_grid_in_one_line(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "baseline": "nope"}))
    assert main([str(path), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare.py: error:") and "baseline 'nope' is not a variant" in err
    assert len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------ significance


def multilabel_fixture(seed=0, n=200, labels=5):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, labels)) < 0.25).astype(int)
    prob = np.round(np.clip(0.35 * targets + 0.65 * rng.random((n, labels)), 0, 1), 2)  # rounded: ties
    return prob, targets


def test_weighted_metrics_equal_sklearn_metrics_of_the_resampled_set():
    prob, targets = multilabel_fixture()
    pred = prob >= 0.5
    idx = np.random.default_rng(1).integers(0, len(prob), len(prob))
    weights = np.stack([np.ones(len(prob)), np.bincount(idx, minlength=len(prob))]).astype(float)
    class_thresholds = np.array([0.3, 0.45, 0.5, 0.6, 0.75])
    ours = weighted_multilabel_metrics(prob, pred, targets, weights, prob >= class_thresholds)
    for row, (p, t) in enumerate(((prob, targets), (prob[idx], targets[idx]))):
        expected = multilabel_metrics(p, t, threshold=0.5, class_thresholds=class_thresholds)
        for key in ("f1_micro", "f1_macro", "map", "ece", "f1_micro_per_class", "f1_macro_per_class"):
            assert ours[key][row] == pytest.approx(expected[key], rel=1e-12), (row, key)


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_weighted_map_equals_sklearn_with_ties_and_labels_that_lose_their_positives(decimals):
    rng = np.random.default_rng(decimals)
    n = 120
    targets = (rng.random((n, 6)) < 0.2).astype(int)
    targets[:, 4] = 0
    targets[[3, 70], 4] = 1  # a rare label: two positives
    targets[:, 5] = 0  # a label without any positive
    prob = np.round(np.clip(0.3 * targets + 0.7 * rng.random((n, 6)), 0, 1), decimals)
    draws = [rng.integers(0, n, n) for _ in range(5)]
    draws[1] = np.setdiff1d(np.arange(n), [3, 70])[
        rng.integers(0, n - 2, n)
    ]  # the rare label's positives drop out
    draws[2] = np.r_[np.full(n - 1, 3), 5]  # one example many times: a single positive of label 4
    weights = np.stack([np.bincount(idx, minlength=n) for idx in draws]).astype(float)
    ours = weighted_multilabel_metrics(prob, prob >= 0.5, targets, weights)["map"]
    for row, idx in enumerate(draws):
        expected = multilabel_metrics(prob[idx], targets[idx], threshold=0.5)["map"]
        assert ours[row] == pytest.approx(expected, rel=1e-12, nan_ok=True), row


def test_multilabel_bootstrap_identical_and_different_systems():
    prob, targets = multilabel_fixture()
    same = multilabel_paired_bootstrap((prob, prob >= 0.5), (prob, prob >= 0.5), targets, n_samples=200)
    assert same == dict.fromkeys(same, 1.0)
    noisy = np.clip(prob + np.random.default_rng(2).normal(0, 0.3, prob.shape), 0, 1)
    different = multilabel_paired_bootstrap(
        (prob, prob >= 0.5), (noisy, noisy >= 0.5), targets, n_samples=200
    )
    assert different["map"] == pytest.approx(1 / 201)  # far worse ranking: no resample comes close
    assert all(1 / 201 <= p <= 1 for p in different.values())
    with_classes = multilabel_paired_bootstrap(
        (prob, prob >= 0.5, prob >= 0.3), (noisy, noisy >= 0.5, noisy >= 0.3), targets, n_samples=200
    )
    assert {k: with_classes[k] for k in different} == different  # the same resamples
    assert set(with_classes) - set(different) == {"f1_micro_per_class", "f1_macro_per_class"}
    with pytest.raises(ValueError, match="per-class thresholds, or neither"):
        multilabel_paired_bootstrap((prob, prob >= 0.5), (prob, prob >= 0.5, prob >= 0.3), targets)


def test_sacrebleu_paired_bootstrap():
    refs = ["the cat sat on the mat", "a dog runs in the park", "hello there my friend"] * 10
    assert sacrebleu_paired_bootstrap(refs, refs, refs, n_samples=100) == {"bleu": 1.0, "chrf": 1.0}
    worse = ["the cat sat", "a dog", "hello"] * 10
    p = sacrebleu_paired_bootstrap(refs, worse, refs, n_samples=100)
    assert p["bleu"] == pytest.approx(1 / 101) and p["chrf"] == pytest.approx(1 / 101)
    with pytest.raises(ValueError, match="as many"):
        sacrebleu_paired_bootstrap(refs, worse[:-1], refs)


def test_seed_t_test_hand_computed():
    # differences 0.5, 0.4, 0.6: mean 0.5, sd 0.1, t = 0.5 / (0.1 / sqrt 3) = sqrt 75; with 2 degrees of
    # freedom the two-sided p is 1 - t / sqrt(t^2 + 2) = 1 - sqrt(75 / 77).
    assert seed_t_test([1, 2, 3], [1.5, 2.4, 3.6]) == pytest.approx(1 - math.sqrt(75 / 77), rel=1e-9)
    assert seed_t_test([1, 2], [1.5, 2.5]) is None  # no spread
    assert seed_t_test([1], [2]) is None


def test_summary_table_cells_and_the_bootstrap_floor():
    summary = {
        "ce": {
            "test_bleu": {"mean": 37.4123, "std": 0.478, "n": 3},
            "test_ece": {"mean": 0.0371, "std": 0.002, "n": 3},
        },
        "cel": {
            "test_bleu": {"mean": 37.16, "std": 0.19, "n": 2},
            "test_ece": {"mean": 0.1186, "std": 0.0146, "n": 2},
        },
        "el": {"test_bleu": {"mean": 13.58, "std": None, "n": 1}},
    }
    comparisons = {
        "cel": {
            "test_bleu": {"delta": -0.43, "p_value": 0.039, "p_value_seeds": 0.5612, "test": BOOTSTRAP_TEST},
            "test_ece": {"delta": 0.0811, "p_value": 0.015, "p_value_seeds": 0.015, "test": "paired t-test"},
        },
        "el": {
            "test_bleu": {"delta": -24.38, "p_value": 1 / 1001, "p_value_seeds": None, "test": BOOTSTRAP_TEST}
        },
    }
    assert summary_table("translation", ["ce", "cel", "el"], summary, comparisons) == [
        "| variant | test_bleu | test_ece |",
        "|---|---|---|",
        "| ce | 37.41 ± 0.48 (3) | 0.037 ± 0.002 (3) |",
        "| cel | 37.16 ± 0.19 (2)<br>Δ −0.43, p 0.039; seeds 0.561 | 0.119 ± 0.015 (2)<br>Δ +0.081, p seeds 0.015 |",
        "| el | 13.58 ± – (1)<br>Δ −24.38, p < 0.001; seeds – | – |",
    ]
    assert (
        summary_table("translation", ["ce"], {"ce": {"eval_loss": {"mean": 1, "std": 0, "n": 1}}}, {}) == []
    )


# ------------------------------------------------------------------------------------------ runner, stand-in

STAND_IN = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import numpy as np

    task, args = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
    out = Path(args["--output_dir"]); out.mkdir(parents=True, exist_ok=True)
    seed, loss = int(args["--seed"]), args.get("--loss", "x")
    with open(out.parent.parent / "calls.txt", "a") as f:
        f.write(f"{loss}/{seed} resumed={(out / 'checkpoint-1').is_dir()}\\n")
    root = out.parent.parent
    (root / "env").mkdir(exist_ok=True)  # what the runner gave this run, and that it started
    seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
    (root / "env" / f"{loss}-{seed}.json").write_text(json.dumps(seen))
    if os.environ.get("STAND_IN_TOGETHER"):  # finish only once that many runs have started (20 s at most)
        deadline = time.monotonic() + 20
        while len(list((root / "env").iterdir())) < int(os.environ["STAND_IN_TOGETHER"]):
            if time.monotonic() > deadline:
                print("stand-in: the other runs never started"); sys.exit(3)
            time.sleep(0.05)
    if os.environ.get("STAND_IN_SLEEP"):  # a long run: say who it is, then train "forever"
        (out / "pid").write_text(str(os.getpid())); time.sleep(300)
    if loss == "el":
        print("RuntimeError: el diverged"); sys.exit(2)
    (out / "checkpoint-1").mkdir(exist_ok=True)
    better = 1.0 if loss in ("cel", "apl") else 0.0
    rng = np.random.default_rng(seed)
    history = [{"step": s, "nll_loss": 3.0 / s + 0.1 * better} for s in (1, 2, 3)] + [{"step": 3, "eval_nll_loss": 2.5}]
    history += [{"step": s, "eval_bleu": 10.0 * s + better} for s in (2, 3)]
    (out / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    if task == "translate":
        refs = [f"sentence number {i} is here" for i in range(40)]
        hyps = [r if better or i % 3 else "wrong" for i, r in enumerate(refs)]
        (out / "test_predictions.txt").write_text("\\n".join(hyps) + "\\n")
        (out / "test_references.txt").write_text("\\n".join(refs) + "\\n")
        rel = [[0.0, 0.0, 0.0]] * 13 + [[10.0, 9.3 + better / 2, 8.0 + better], [30.0, 29.5, 27.0]]
        stats = {"reliability": rel, "p_y_histogram": [1.0] * 19 + [21.0], "p_y_sum": 30.0}
        (out / "test_calibration.json").write_text(json.dumps(stats))
        metrics = {"test_bleu": 60.0 + 20 * better + seed, "test_chrf": 70.0 + better + seed / 2,
                   "test_ece": 0.05 - 0.01 * better, "test_bleu_signature": "nrefs:1|tok:13a", "test_runtime": 1.0}
    else:
        targets = (rng.random((60, 4)) < 0.3).astype(np.uint8)
        prob = np.clip(targets * (0.3 + 0.3 * better) + 0.5 * rng.random((60, 4)), 0, 1).astype(np.float32)
        # per-class thresholds: in the scores file, or (runs written before it kept them) in config.json
        class_thresholds = [0.4, 0.5, 0.6, 0.7]
        if seed % 2:
            np.savez(out / "eval_scores.npz", probabilities=prob, labels=targets, threshold=0.5,
                     class_thresholds=np.array(class_thresholds))
        else:
            np.savez(out / "eval_scores.npz", probabilities=prob, labels=targets, threshold=0.5)
            (out / "config.json").write_text(json.dumps({"class_thresholds": class_thresholds}))
        metrics = {"eval_f1_macro": 0.4 + 0.3 * better + seed / 100, "eval_map": 0.5 + 0.2 * better + seed / 50,
                   "eval_f1_macro_per_class": 0.45 + 0.3 * better + seed / 100}
    (out / "all_results.json").write_text(json.dumps(metrics))
    """
)


@pytest.fixture
def stand_in(tmp_path, monkeypatch) -> Path:
    """The runner starts the stand-in instead of ``python -m hf_losses``."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(runner, "LAUNCHER", [sys.executable, str(script)])
    return script


def write_grid(path: Path, **change) -> Path:
    path.write_text(yaml.safe_dump({**GOOD, "args": {"max_steps": 3}, **change}, sort_keys=False))
    return path


def calls(out: Path) -> list[str]:
    return (out / "calls.txt").read_text().splitlines() if (out / "calls.txt").exists() else []


def test_grid_writes_every_file_and_reruns_skip_finished_runs(tmp_path, stand_in, capsys):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    flags = ["--output_dir", str(out), "--no_progress", "--bootstrap_samples", "200"]
    assert main([str(grid), *flags]) == 0
    assert calls(out) == [
        "ce/1 resumed=False",
        "cel/1 resumed=False",
        "ce/2 resumed=False",
        "cel/2 resumed=False",
    ]
    for name in (
        "results.json",
        "report.md",
        "metrics.png",
        "reliability.png",
        "p_y_distribution.png",
        "nll_curves.png",
        "validation_curves.png",
        "log_end.png",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["cel"]["test_bleu"] == {
        "mean": 81.5,
        "std": pytest.approx(math.sqrt(0.5)),
        "n": 2,
    }
    bleu = results["comparisons"]["cel"]["test_bleu"]
    assert bleu["delta"] == pytest.approx(20.0)
    assert bleu["test"] == "paired bootstrap, pooled over seeds"
    assert bleu["p_value"] == pytest.approx(1 / 201) and set(bleu["p_value_per_seed"]) == {"1", "2"}
    assert bleu["p_value_seeds"] is None  # the same +20 on both seeds: no spread
    ece = results["comparisons"]["cel"]["test_ece"]
    assert ece["delta"] == pytest.approx(-0.01) and ece["test"] is None
    assert "test_runtime" not in results["comparisons"]["cel"]
    report = (out / "report.md").read_text()
    assert f"python scripts/compare.py {grid} {' '.join(flags)}" in report
    assert "sacrebleu.significance.PairedTest" in report and "nrefs:1|tok:13a" in report
    assert "| cel | test_bleu | +20.0000 |" in report
    summary_row = "| cel | 81.50 ± 0.71 (2)<br>Δ +20.00, p 0.00498; seeds – | 71.75 ± 0.35 (2)<br>Δ +1.00, "
    assert summary_row in report  # mean 81.5, std sqrt(0.5), p = 1/201; the same +20 on both seeds: no t-test
    assert "0.040 ± 0.000 (2)<br>Δ −0.010, p seeds – |" in report  # ECE: a seed t-test only

    before = (out / "ce" / "seed-1" / "compare_done.json").stat().st_mtime_ns
    assert main([str(grid), *flags, "--no_figures"]) == 0
    assert len(calls(out)) == 4  # nothing ran again
    assert (out / "ce" / "seed-1" / "compare_done.json").stat().st_mtime_ns == before


def test_a_variant_with_fewer_seeds_is_summarised_and_compared_on_its_own_seeds(tmp_path, stand_in):
    grid = write_grid(tmp_path / "grid.yaml", seeds=[1, 2, 3], variant_seeds={"cel": [2]})
    out = tmp_path / "out"
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"]) == 0
    assert calls(out) == [
        "ce/1 resumed=False",
        "ce/2 resumed=False",
        "cel/2 resumed=False",
        "ce/3 resumed=False",
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["grid"]["variant_seeds"] == {"cel": [2]}
    assert (
        results["summary"]["cel"]["test_bleu"]["n"] == 1 and results["summary"]["ce"]["test_bleu"]["n"] == 3
    )
    assert set(results["comparisons"]["cel"]["test_bleu"]["p_value_per_seed"]) == {"2"}
    assert "seeds [1, 2, 3], `cel` only [2], baseline `ce`" in (out / "report.md").read_text()

    (out / "ce" / "seed-2" / "compare_done.json").unlink()  # no seed that both finished: not compared yet
    assert main([str(grid), "--output_dir", str(out), "--report_only", "--no_figures"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["cel"]["test_bleu"]["n"] == 1 and results["comparisons"] == {}
    assert "No comparison yet" in (out / "report.md").read_text()


def test_killed_run_resumes_and_changed_flags_are_refused(tmp_path, stand_in, capsys):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    quick = ["--no_progress", "--no_figures", "--bootstrap_samples", "50"]
    assert main([str(grid), "--output_dir", str(out), *quick]) == 0
    killed = out / "cel" / "seed-2"
    (killed / "compare_done.json").unlink()  # killed before it finished: a checkpoint but no marker
    (killed / "all_results.json").unlink()
    assert main([str(grid), "--output_dir", str(out), "--report_only", *quick]) == 0
    report = (out / "report.md").read_text()
    assert "**Not finished (not in the tables):** cel/seed-2." in report
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["cel"]["test_bleu"]["n"] == 1
    # Δ pairs the seeds both finished, as the tests do: cel/1 (81) - ce/1 (61), not - mean(ce/1, ce/2) (61.5)
    assert results["comparisons"]["cel"]["test_bleu"]["delta"] == pytest.approx(20.0)
    assert results["comparisons"]["cel"]["test_bleu"]["n_pairs"] == 1
    assert "| cel | test_bleu | +20.0000 |" in report
    assert main([str(grid), "--output_dir", str(out), *quick]) == 0
    assert calls(out)[4:] == ["cel/2 resumed=True"]  # only the killed run, with its checkpoint there
    assert "$ " in (killed / "compare_log.txt").read_text()

    changed = write_grid(tmp_path / "changed.yaml", args={"max_steps": 5})
    capsys.readouterr()
    assert main([str(changed), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "was started with other settings (max_steps differ)" in err and len(err.strip().splitlines()) == 1


def finished_checkpoint(folder: Path, step: int, weights: str) -> Path:
    """A complete checkpoint as the Trainer leaves it (trainer_state.json written last)."""
    folder = folder / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text(weights)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_start_from_continues_another_grid_s_checkpoints_once(tmp_path, stand_in, capsys):
    short = tmp_path / "short"
    for variant in ("ce", "cel"):
        for seed in (1, 2):
            finished_checkpoint(short / variant / f"seed-{seed}", 1, f"{variant}/{seed}")
    template = str(short / "{variant}" / "seed-{seed}" / "checkpoint-1")
    grid, out = write_grid(tmp_path / "long.yaml", start_from=template), tmp_path / "out"
    quick = ["--output_dir", str(out), "--no_progress", "--no_figures", "--bootstrap_samples", "50"]
    assert main([str(grid), *quick, "--dry_run"]) == 0
    printed = capsys.readouterr()
    assert (
        len(printed.out.splitlines()) == 4
    )  # one command per run, as without start_from; the copies on stderr
    assert printed.err.splitlines() == [
        f"compare.py: {v}/seed-{s} starts from a copy of {short / v / f'seed-{s}' / 'checkpoint-1'}"
        for s in (1, 2)
        for v in ("ce", "cel")
    ]
    assert not out.exists()
    assert main([str(grid), *quick]) == 0
    assert calls(out) == [
        "ce/1 resumed=True",
        "cel/1 resumed=True",
        "ce/2 resumed=True",
        "cel/2 resumed=True",
    ]
    copied = out / "cel" / "seed-2" / "checkpoint-1"
    assert (copied / "model.safetensors").read_text() == "cel/2"
    assert json.loads((copied.parent / "compare_flags.json").read_text())["start_from"] == template.format(
        variant="cel", seed=2
    )
    assert not list(out.rglob(".*.partial"))

    (
        copied.parent / "compare_done.json"
    ).unlink()  # killed after a save of its own: resumed, not copied again
    (copied / "model.safetensors").write_text("trained on")
    assert main([str(grid), *quick]) == 0
    assert calls(out)[4:] == ["cel/2 resumed=True"]
    assert (copied / "model.safetensors").read_text() == "trained on"

    capsys.readouterr()
    moved = write_grid(tmp_path / "moved.yaml", start_from=str(tmp_path / "elsewhere" / "{variant}-{seed}"))
    assert main([str(moved), *quick]) == 2  # a started run may not change where it came from
    err = capsys.readouterr().err
    assert "was started with other settings (start_from differ)" in err and len(err.strip().splitlines()) == 1


def test_start_from_a_missing_checkpoint_is_refused_before_any_run(tmp_path, stand_in, capsys):
    short = tmp_path / "short"
    finished_checkpoint(short / "ce" / "seed-1", 1, "ce/1")  # the other three runs have none
    (short / "cel" / "seed-1" / "checkpoint-1").mkdir(parents=True)  # a killed save: no trainer_state.json
    grid = write_grid(
        tmp_path / "long.yaml", start_from=str(short / "{variant}" / "seed-{seed}" / "checkpoint-1")
    )
    out = tmp_path / "out"
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert "start_from:" in err and "cel/seed-1) is not a complete checkpoint" in err
    assert len(err.splitlines()) == 1 and calls(out) == []


def test_the_report_is_refreshed_after_each_finished_run_while_the_next_one_trains(
    tmp_path, stand_in, monkeypatch, capsys
):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    aggregate = compare_main.aggregate_grid
    seen = []  # at each report: the finished runs, and the runs started so far

    def recording(*args, **kwargs):
        runs = list(out.glob("*/seed-*"))  # a run's log is opened as it starts; its marker written as it ends
        seen.append(
            tuple(sum((r / name).exists() for r in runs) for name in ("compare_done.json", "compare_log.txt"))
        )
        if len(seen) == 1:
            raise RuntimeError("a bug in the report")
        return aggregate(*args, **kwargs)

    monkeypatch.setattr(compare_main, "aggregate_grid", recording)
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"]) == 0
    # one report after each of the first three runs (the next run already going), then the final one
    assert seen == [(1, 2), (2, 3), (3, 4), (4, 4)]
    printed, warned = capsys.readouterr()
    assert warned.strip() == (
        "compare.py: warning: report not refreshed after ce/seed-1: a bug in the report"
    )  # ... and the runs went on
    assert f"compare.py: cel/seed-1 finished; {out / 'report.md'} refreshed" in printed.splitlines()
    assert json.loads((out / "results.json").read_text())["summary"]["cel"]["test_bleu"]["n"] == 2
    assert not list(out.glob(".*.tmp"))  # every file was replaced in one step


def test_failed_run_stops_the_grid_with_one_line(tmp_path, stand_in, capsys):
    grid = write_grid(tmp_path / "grid.yaml", variants={"ce": {"loss": "ce"}, "bad": {"loss": "el"}})
    out = tmp_path / "out"
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(
        "compare.py: error: run bad/seed-1 failed (exit status 2): RuntimeError: el diverged"
    )
    assert calls(out) == ["ce/1 resumed=False", "el/1 resumed=False"]
    assert (out / "report.md").is_file()  # the report covers what finished


def seen_env(out: Path) -> dict[str, dict]:
    return {f.stem: json.loads(f.read_text()) for f in sorted((out / "env").iterdir())}


def test_jobs_run_side_by_side_with_a_device_each_and_the_cores_shared(tmp_path, stand_in, monkeypatch):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    monkeypatch.setenv("STAND_IN_TOGETHER", "2")  # a run ends only once a second one is going
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runner, "usable_cores", lambda: 8)
    quick = ["--output_dir", str(out), "--no_progress", "--no_figures", "--bootstrap_samples", "50"]
    assert main([str(grid), *quick, "--devices", "0,1"]) == 0  # two jobs: one per device
    assert sorted(calls(out)) == sorted(["ce/1 resumed=False", "cel/1 resumed=False", "ce/2 resumed=False",
                                         "cel/2 resumed=False"])  # fmt: skip
    env = seen_env(out)
    assert {env["ce-1"]["CUDA_VISIBLE_DEVICES"], env["cel-1"]["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    assert {e["OMP_NUM_THREADS"] for e in env.values()} == {"4"}  # 8 cores, 2 jobs
    assert json.loads((out / "results.json").read_text())["summary"]["cel"]["test_bleu"]["n"] == 2

    one_at_a_time = tmp_path / "serial"  # the same grid one run at a time: the first run waits for company
    monkeypatch.setenv("STAND_IN_TOGETHER", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main([str(grid), "--output_dir", str(one_at_a_time), "--no_progress", "--no_figures"]) == 0
    env = seen_env(one_at_a_time)
    assert {e["CUDA_VISIBLE_DEVICES"] for e in env.values()} == {None}
    assert {e["OMP_NUM_THREADS"] for e in env.values()} == {"3"}  # the user's setting is kept


def test_with_jobs_a_failed_run_lets_the_others_finish_and_starts_no_more(
    tmp_path, stand_in, monkeypatch, capsys
):
    variants = {"ce": {"loss": "ce"}, "bad": {"loss": "el"}}
    grid, out = write_grid(tmp_path / "grid.yaml", variants=variants), tmp_path / "out"
    monkeypatch.setenv("STAND_IN_TOGETHER", "2")
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures", "--jobs", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("compare.py: error: run bad/seed-1 failed (exit status 2)") and len(err) == 1
    # el/1 fails once ce/1 is going; ce/2 may start before the failure is seen, el/2 never does
    started = set(calls(out))
    assert {"ce/1 resumed=False", "el/1 resumed=False"} <= started and "el/2 resumed=False" not in started
    ce_started = [int(c[3]) for c in calls(out) if c.startswith("ce/")]
    assert all(runner.is_finished(out / "ce" / f"seed-{seed}") for seed in ce_started)
    assert not runner.is_finished(out / "bad" / "seed-1")


def test_set_overrides_a_flag_and_only_placement_flags_may_change_on_resume(tmp_path, stand_in, capsys):
    grid, out = write_grid(tmp_path / "grid.yaml", args={"max_steps": 3, "use_cpu": True}), tmp_path / "out"
    quick = ["--output_dir", str(out), "--no_progress", "--no_figures", "--bootstrap_samples", "50"]
    assert main([str(grid), *quick]) == 0
    started = out / "cel" / "seed-2"
    (started / "compare_done.json").unlink()  # killed on the CPU machine; resumed on a GPU one
    assert main([str(grid), *quick, "--set", "use_cpu=false", "--set", "dataloader_num_workers=2"]) == 0
    assert calls(out)[4:] == ["cel/2 resumed=True"]
    flags = json.loads((started / "compare_flags.json").read_text())["flags"]
    assert flags["use_cpu"] is False and flags["dataloader_num_workers"] == 2 and flags["max_steps"] == 3
    resumed = (started / "compare_log.txt").read_text().strip().splitlines()[-1]
    assert "--use_cpu false" in resumed and "--dataloader_num_workers 2 --seed 2" in resumed
    results = json.loads((out / "results.json").read_text())
    assert results["grid"]["overrides"] == {"use_cpu": False, "dataloader_num_workers": 2}
    report = (out / "report.md").read_text()
    assert "Set on the command line for every variant: --use_cpu False" in report
    # the runs table says which runs ran elsewhere than the grid file says
    assert (
        "| cel/seed-2 | yes | " in report
        and report.count("--use_cpu false --dataloader_num_workers 2 |") == 1
    )
    assert report.count("| yes | ") == 4
    placed = {(r["variant"], r["seed"]): r["placement"] for r in results["runs"]}
    assert placed[("cel", 2)] == {"use_cpu": False, "dataloader_num_workers": 2} and placed[("ce", 1)] == {}

    capsys.readouterr()
    assert main([str(grid), *quick, "--set", "max_steps=5"]) == 2  # what a run computes may not change
    err = capsys.readouterr().err
    assert "was started with other settings (max_steps differ)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--set", "use_cpu"], "--set expects KEY=VALUE (e.g. --set use_cpu=false); got 'use_cpu'"),
        (["--set", "seed=3"], "--set: --seed is set by the runner"),
        (["--set", "bad key=1"], "--set: 'bad key' is not a flag name"),
        (["--jobs", "0"], "--jobs must be at least 1; got 0"),
        (["--variants", "ce,xl"], "--variants: 'xl' is not a variant; variants: ce, cel"),
        (["--seeds", "3"], "--seeds: 3 is not a seed of the grid; seeds: 1, 2"),
        (["--seeds", "1,two"], "argument --seeds: invalid comma-separated int list value: '1,two'"),
    ],
)
def test_bad_runner_options_are_one_line(tmp_path, stand_in, capsys, flags, message):
    grid = write_grid(tmp_path / "grid.yaml")
    assert main([str(grid), "--output_dir", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_classification_grid_bootstraps_the_scores(tmp_path, stand_in):
    grid = write_grid(
        tmp_path / "grid.yaml",
        task="classification",
        seeds=[1, 2, 3],
        baseline="bce",
        variants={"bce": {"loss": "bce"}, "apl": {"loss": "apl"}},
    )
    out = tmp_path / "out"
    assert (
        main(
            [str(grid), "--output_dir", str(out), "--no_progress", "--bootstrap_samples", "100"],
        )
        == 0
    )
    comparison = json.loads((out / "results.json").read_text())["comparisons"]["apl"]
    assert comparison["eval_map"]["delta"] == pytest.approx(0.2)
    assert comparison["eval_map"]["p_value"] == pytest.approx(1 / 101)
    assert set(comparison["eval_map"]["p_value_per_seed"]) == {"1", "2", "3"}
    assert comparison["eval_map"]["p_value_seeds"] is None  # +0.2 on every seed
    assert comparison["eval_f1_macro"]["test"] == "paired bootstrap, pooled over seeds"
    per_class = comparison["eval_f1_macro_per_class"]
    assert per_class["test"] == "paired bootstrap, pooled over seeds"
    assert set(per_class["p_value_per_seed"]) == {"1", "2", "3"}
    assert (out / "reliability.png").is_file() and not (out / "p_y_distribution.png").exists()

    before = (out / "results.json").read_bytes()
    flags = ["--output_dir", str(out), "--no_progress", "--bootstrap_samples", "100", "--baseline", "apl"]
    assert main([str(grid), *flags]) == 0
    against_apl = json.loads((out / "results-vs-apl.json").read_text())
    assert against_apl["grid"]["baseline"] == "apl" and set(against_apl["comparisons"]) == {"bce"}
    assert against_apl["comparisons"]["bce"]["eval_map"]["delta"] == pytest.approx(-0.2)
    assert "## Against the baseline `apl`" in (out / "report-vs-apl.md").read_text()
    assert (out / "results.json").read_bytes() == before  # the grid's own report is untouched
    assert len(calls(out)) == 6  # no run started

    # a run whose per-class thresholds are lost (kept only in an uncommitted config.json): said, not hidden
    (out / "bce" / "seed-2" / "config.json").unlink()
    assert main([str(grid), "--output_dir", str(out), "--report_only", "--bootstrap_samples", "100"]) == 0
    comparison = json.loads((out / "results.json").read_text())["comparisons"]["apl"]
    per_class = comparison["eval_f1_macro_per_class"]
    assert per_class["p_value_pooled_bootstrap"] is None and per_class["p_value_per_seed"] == {}
    assert per_class["test"].endswith("no bootstrap: no per-class thresholds for bce/seed-2")
    assert comparison["eval_map"]["p_value"] == pytest.approx(1 / 101)  # the other metrics keep theirs
    assert "no bootstrap: no per-class thresholds for bce/seed-2" in (out / "report.md").read_text()


def test_another_baseline_must_be_a_variant(tmp_path, stand_in, capsys):
    grid = write_grid(tmp_path / "grid.yaml")
    assert main([str(grid), "--output_dir", str(tmp_path / "out"), "--baseline", "el"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "compare.py: error: --baseline 'el' is not a variant; variants: ce, cel"
    )
    assert not (tmp_path / "out").exists()


def test_variants_and_seeds_pick_the_runs_to_start_and_the_report_keeps_every_finished_run(
    tmp_path, stand_in, capsys
):
    grid, out = write_grid(tmp_path / "grid.yaml", seeds=[1, 2, 3]), tmp_path / "out"
    quick = ["--output_dir", str(out), "--no_progress", "--no_figures", "--bootstrap_samples", "50"]
    assert main([str(grid), *quick, "--seeds", "1"]) == 0
    assert main([str(grid), *quick, "--variants", "cel", "--seeds", "3,2"]) == 0
    assert calls(out) == [
        "ce/1 resumed=False",
        "cel/1 resumed=False",
        "cel/2 resumed=False",
        "cel/3 resumed=False",
    ]
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["ce"]["test_bleu"]["n"] == 1 and summary["cel"]["test_bleu"]["n"] == 3

    capsys.readouterr()
    assert main([str(grid), "--output_dir", str(out), "--dry_run", "--variants", "ce"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.rsplit("/", 2)[-2:] for line in printed] == [["ce", "seed-2"], ["ce", "seed-3"]]


def test_dry_run_prints_the_unfinished_commands(tmp_path, stand_in, capsys):
    grid = write_grid(tmp_path / "grid.yaml")
    assert main([str(grid), "--output_dir", str(tmp_path / "out"), "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].startswith("python -m hf_losses translate --max_steps 3")
    assert lines[0].endswith(f"--loss ce --seed 1 --output_dir {tmp_path / 'out' / 'ce' / 'seed-1'}")


def test_every_variant_is_parsed_by_its_task_parser_before_any_run(tmp_path, stand_in, capsys):
    out = tmp_path / "out"
    for variants, expected in (
        ({"ce": {"loss": "ce"}, "cel": {"loss": "cel", "log_end": 1.5}}, "variant cel: "),
        ({"ce": {"loss": "ce"}, "cel": {"loss": "cel", "log_ned": 0.5}}, "variant cel: "),
        ({"bce": {"loss": "bce"}, "apl": {"loss": "apl", "gamma_neg": "x"}}, "variant apl: "),
    ):
        task = "classification" if "bce" in variants else "translation"
        grid = write_grid(tmp_path / "grid.yaml", task=task, baseline=next(iter(variants)), variants=variants)
        assert main([str(grid), "--output_dir", str(out), "--no_progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"compare.py: error: {grid}: {expected}") and len(err.splitlines()) == 1, err
        flag = next(iter(set(variants[list(variants)[1]]) - {"loss"}))
        assert f"--{flag}" in err or f"{flag}" in err, err
        assert not out.exists() and calls(out) == []  # nothing ran, nothing written


def test_recorded_commands_are_portable_and_old_records_still_read(tmp_path, stand_in, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path / "grid.yaml")
    assert main(["grid.yaml", "--output_dir", str(tmp_path / "out"), "--no_progress", "--no_figures"]) == 0
    done = json.loads((tmp_path / "out" / "cel" / "seed-2" / "compare_done.json").read_text())
    assert done["command"] == [
        "python", "-m", "hf_losses", "translate", "--max_steps", "3", "--loss", "cel", "--log_end", "0.5",
        "--seed", "2", "--output_dir", "out/cel/seed-2",
    ]  # fmt: skip
    log = (tmp_path / "out" / "cel" / "seed-2" / "compare_log.txt").read_text()
    assert "\n$ python -m hf_losses translate --max_steps 3" in log and sys.executable not in log
    assert (
        "python -m hf_losses translate --max_steps 3 --loss ce --seed 1 --output_dir out/ce/seed-1"
        in (tmp_path / "out" / "report.md").read_text()
    )
    old = {  # what the runner wrote before: the machine's interpreter and script
        "command": ["/usr/bin/python3", "/home/u/hf_losses/scripts/translate.py", "--loss", "ce"],
        "returncode": 0,
        "wall_time_s": 12.5,
    }
    (tmp_path / "out" / "ce" / "seed-1" / "compare_done.json").write_text(json.dumps(old))
    assert main([str(grid), "--output_dir", "out", "--report_only", "--no_figures"]) == 0
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [r["wall_time_s"] for r in runs if r["variant"] == "ce" and r["seed"] == 1] == [12.5]


def test_without_matplotlib_the_results_and_report_are_still_written(tmp_path, stand_in, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--bootstrap_samples", "20"]) == 0
    err = capsys.readouterr().err
    assert "warning: the report will have no figures: matplotlib is not installed" in err
    assert err.index("warning") < err.index("\n") + 1  # said before the runs, on the first line
    assert "pip install 'hf_losses[experiments]'" in err
    results = json.loads((out / "results.json").read_text())
    assert results["figures"] == [] and "matplotlib is not installed" in results["figures_skipped"]
    assert (
        "Skipped: matplotlib is not installed (pip install 'hf_losses[experiments]')."
        in (out / "report.md").read_text()
    )
    assert not list(out.glob("*.png")) and len(calls(out)) == 4


def test_a_run_folder_held_by_another_runner_is_refused(tmp_path, stand_in, capsys):
    import fcntl

    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    busy = out / "ce" / "seed-1"
    busy.mkdir(parents=True)
    with open(busy / "compare_log.txt", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"compare.py: error: run folder {busy} is in use by another runner (it holds {busy / 'compare_log.txt'} "
        "locked); wait for it to finish or stop it"
    )
    assert calls(out) == [] and not (busy / "compare_flags.json").exists()
    assert main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"]) == 0  # released


def _process_state(pid: int) -> str | None:
    """The state letter of a process (Z: exited, not yet reaped), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_killed_runner_takes_its_run_with_it(tmp_path, stand_in):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    code = (
        "import sys; from hf_losses.apps.compare import main, runner; "
        f"runner.LAUNCHER = [sys.executable, {str(stand_in)!r}]; "
        f"sys.exit(main([{str(grid)!r}, '--output_dir', {str(out)!r}, '--no_progress']))"
    )
    env = {**os.environ, "STAND_IN_SLEEP": "1"}
    compare = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    pid_file, deadline = out / "ce" / "seed-1" / "pid", time.monotonic() + 240
    while not pid_file.is_file() or not pid_file.read_text():
        assert compare.poll() is None, compare.stderr.read()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    child = int(pid_file.read_text())
    assert _process_state(child) not in (None, "Z")
    compare.kill()  # kill -9: no handler of the runner runs
    compare.wait()
    deadline = time.monotonic() + 20
    while _process_state(child) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.1)
    survived = _process_state(child) not in (None, "Z")
    if survived:  # leave no stand-in sleeping behind
        os.kill(child, signal.SIGKILL)
    assert not survived, "the run outlived its runner"


# ------------------------------------------------------------------------------------------ the real script


@pytest.mark.slow  # six script subprocesses: 180 s on the shared 2-core machine, mostly importing torch
def test_real_translation_grid_runs_resumes_and_reports(tmp_path):
    """2 variants x 2 seeds of scripts/translate.py (tiny Marian, 2 steps), then a killed run resumes."""
    from tests.helpers.tiny import tiny_marian_config

    words = ["das haus ist klein", "der hund ist gross", "die katze schläft", "ich bin müde"]
    english = ["the house is small", "the dog is big", "the cat sleeps", "i am tired"]
    for split, n in (("train", 8), ("test", 4)):
        rows = [{"translation": {"de": words[i % 4], "en": english[i % 4]}} for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny_marian_config(120).save_pretrained(tmp_path / "tiny")
    args = {
        "train_file": str(tmp_path / "train.jsonl"),
        "test_file": str(tmp_path / "test.jsonl"),
        "model_config": str(tmp_path / "tiny" / "config.json"),
        "vocab_size": 120,
        "do_train": True,
        "do_predict": True,
        "predict_with_generate": True,
        "max_steps": 2,
        "save_strategy": "steps",
        "save_steps": 1,
        "logging_steps": 1,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "generation_max_length": 6,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "dataloader_pin_memory": False,
    }
    grid = write_grid(tmp_path / "grid.yaml", args=args)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def compare() -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "scripts" / "compare.py"), str(grid), "--output_dir", str(out)]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    result = compare()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4/4" in result.stderr  # the progress bar
    for variant in ("ce", "cel"):
        for seed in (1, 2):
            run = out / variant / f"seed-{seed}"
            assert {
                "compare_done.json",
                "all_results.json",
                "test_predictions.txt",
                "trainer_state.json",
            } <= {p.name for p in run.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["cel"]["test_bleu"]["n"] == 2
    assert results["comparisons"]["cel"]["test_bleu"]["test"] == "paired bootstrap, pooled over seeds"
    assert {"report.md", "metrics.png", "nll_curves.png"} <= {p.name for p in out.iterdir()}

    killed = out / "cel" / "seed-2"  # as if killed after its first checkpoint
    for name in ("compare_done.json", "all_results.json", "test_predictions.txt"):
        (killed / name).unlink()
    subprocess.run(["rm", "-r", str(killed / "checkpoint-2")], check=True)
    result = compare()
    assert result.returncode == 0, result.stderr[-2000:]
    log = (killed / "compare_log.txt").read_text()
    assert log.count("\n$ ") == 2 and "Resuming from" in log and "checkpoint-1" in log
    assert (killed / "compare_done.json").is_file()
    assert (out / "ce" / "seed-1" / "compare_log.txt").read_text().count("\n$ ") == 1  # finished: skipped

    # a longer schedule continues ce/seed-1 from its step 2 (start_from) and stops early on validation BLEU
    stop_early = {
        "max_steps": 6,
        "validation_file": str(tmp_path / "test.jsonl"),
        "do_eval": True,
        "eval_strategy": "steps",
        "eval_steps": 1,
        "metric_for_best_model": "bleu",
        "early_stopping_patience": 1,
        "early_stopping_threshold": 1e9,  # no evaluation after the first one counts as better
    }
    grid = write_grid(
        tmp_path / "longer.yaml",
        args={**args, **stop_early},
        start_from=str(out / "{variant}" / "seed-{seed}" / "checkpoint-2"),
    )
    out = tmp_path / "longer"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare.py"), str(grid), "--output_dir", str(out)]
        + ["--variants", "ce", "--seeds", "1", "--no_figures"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    run = out / "ce" / "seed-1"
    assert "Resuming from" in (run / "compare_log.txt").read_text()
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "loss" in e] == [1, 2, 3, 4]  # steps 1-2 come from the start run
    assert [e["step"] for e in history if "eval_bleu" in e] == [3, 4]
    assert json.loads((run / "all_results.json").read_text())["train_stopped_early"] == 1


def test_each_translation_variant_s_log_end_is_resolved_by_its_preset(tmp_path):
    from hf_losses.apps.compare.grid import parse_grid
    from hf_losses.apps.compare.main import variant_log_ends

    variants = {"ce": {"loss": "ce"}, "cel": {"loss": "cel"}, "le75": {"loss": "cel", "log_end": 0.75}}
    grid = parse_grid({**GOOD, "variants": {**variants, "el": {"loss": "el"}}})
    assert variant_log_ends(grid) == {"ce": None, "cel": 0.5, "le75": 0.75, "el": 1.0}
