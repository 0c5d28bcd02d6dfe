"""scripts/compare.py and hf_losses.experiments: grid errors, resumable runs, aggregation, significance, report.

The runner's mechanics are tested against a stand-in task script (a few lines of Python that write the files a
real run writes, in milliseconds); one test (slow) runs a real 2 x 2 grid of scripts/translate.py on tiny data and resumes a killed run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_losses.experiments import GridError, load_grid, main, parse_grid
from hf_losses.experiments.significance import (
    multilabel_paired_bootstrap,
    sacrebleu_paired_bootstrap,
    seed_t_test,
    weighted_multilabel_metrics,
)
from hf_losses.metrics import multilabel_metrics

ROOT = Path(__file__).resolve().parents[1]

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
    argv = grid.command("cel", 2, tmp_path / "cel" / "seed-2", tmp_path)
    assert argv[1] == str(tmp_path / "translate.py")
    assert argv[2:] == [
        "--max_steps", "2", "--do_train", "true", "--text_column", "title", "body",
        "--loss", "cel", "--log_end", "0.5", "--seed", "2", "--output_dir", str(tmp_path / "cel" / "seed-2"),
    ]  # fmt: skip


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
    assert main([str(path), "--output_dir", str(tmp_path / "out")], scripts_dir=tmp_path) == 2
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
    ours = weighted_multilabel_metrics(prob, pred, targets, weights)
    for row, (p, t) in enumerate(((prob, targets), (prob[idx], targets[idx]))):
        expected = multilabel_metrics(p, t, threshold=0.5)
        for key in ("f1_micro", "f1_macro", "map", "ece"):
            assert ours[key][row] == pytest.approx(expected[key], rel=1e-12), (row, key)


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


# ------------------------------------------------------------------------------------------ runner, stand-in

STAND_IN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import numpy as np

    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    out = Path(args["--output_dir"]); out.mkdir(parents=True, exist_ok=True)
    seed, loss = int(args["--seed"]), args.get("--loss", "x")
    with open(out.parent.parent / "calls.txt", "a") as f:
        f.write(f"{loss}/{seed} resumed={(out / 'checkpoint-1').is_dir()}\\n")
    if loss == "boom":
        print("ValueError: boom is not a loss"); sys.exit(2)
    (out / "checkpoint-1").mkdir(exist_ok=True)
    better = 1.0 if loss in ("cel", "apl") else 0.0
    rng = np.random.default_rng(seed)
    history = [{"step": s, "nll_loss": 3.0 / s + 0.1 * better} for s in (1, 2, 3)] + [{"step": 3, "eval_nll_loss": 2.5}]
    (out / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    if "translate" in sys.argv[0]:
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
        np.savez(out / "eval_scores.npz", probabilities=prob, labels=targets, threshold=0.5)
        metrics = {"eval_f1_macro": 0.4 + 0.3 * better + seed / 100, "eval_map": 0.5 + 0.2 * better + seed / 50}
    (out / "all_results.json").write_text(json.dumps(metrics))
    """
)


@pytest.fixture
def stand_in(tmp_path) -> Path:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("translate.py", "classify.py"):
        (scripts / name).write_text(STAND_IN)
    return scripts


def write_grid(path: Path, **change) -> Path:
    path.write_text(yaml.safe_dump({**GOOD, "args": {"max_steps": 3}, **change}, sort_keys=False))
    return path


def calls(out: Path) -> list[str]:
    return (out / "calls.txt").read_text().splitlines() if (out / "calls.txt").exists() else []


def test_grid_writes_every_file_and_reruns_skip_finished_runs(tmp_path, stand_in, capsys):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    flags = ["--output_dir", str(out), "--no_progress", "--bootstrap_samples", "200"]
    assert main([str(grid), *flags], scripts_dir=stand_in) == 0
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

    before = (out / "ce" / "seed-1" / "compare_done.json").stat().st_mtime_ns
    assert main([str(grid), *flags, "--no_figures"], scripts_dir=stand_in) == 0
    assert len(calls(out)) == 4  # nothing ran again
    assert (out / "ce" / "seed-1" / "compare_done.json").stat().st_mtime_ns == before


def test_killed_run_resumes_and_changed_flags_are_refused(tmp_path, stand_in, capsys):
    grid, out = write_grid(tmp_path / "grid.yaml"), tmp_path / "out"
    quick = ["--no_progress", "--no_figures", "--bootstrap_samples", "50"]
    assert main([str(grid), "--output_dir", str(out), *quick], scripts_dir=stand_in) == 0
    killed = out / "cel" / "seed-2"
    (killed / "compare_done.json").unlink()  # killed before it finished: a checkpoint but no marker
    (killed / "all_results.json").unlink()
    assert main([str(grid), "--output_dir", str(out), "--report_only", *quick], scripts_dir=stand_in) == 0
    report = (out / "report.md").read_text()
    assert "**Not finished (not in the tables):** cel/seed-2." in report
    assert json.loads((out / "results.json").read_text())["summary"]["cel"]["test_bleu"]["n"] == 1
    assert main([str(grid), "--output_dir", str(out), *quick], scripts_dir=stand_in) == 0
    assert calls(out)[4:] == ["cel/2 resumed=True"]  # only the killed run, with its checkpoint there
    assert "$ " in (killed / "compare_log.txt").read_text()

    changed = write_grid(tmp_path / "changed.yaml", args={"max_steps": 5})
    capsys.readouterr()
    assert main([str(changed), "--output_dir", str(out)], scripts_dir=stand_in) == 2
    err = capsys.readouterr().err
    assert "was started with other settings (max_steps differ)" in err and len(err.strip().splitlines()) == 1


def test_failed_run_stops_the_grid_with_one_line(tmp_path, stand_in, capsys):
    grid = write_grid(tmp_path / "grid.yaml", variants={"ce": {"loss": "ce"}, "bad": {"loss": "boom"}})
    out = tmp_path / "out"
    assert (
        main([str(grid), "--output_dir", str(out), "--no_progress", "--no_figures"], scripts_dir=stand_in)
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(
        "compare.py: error: run bad/seed-1 failed (exit status 2): ValueError: boom is not a loss"
    )
    assert calls(out) == ["ce/1 resumed=False", "boom/1 resumed=False"]
    assert (out / "report.md").is_file()  # the report covers what finished


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
            scripts_dir=stand_in,
        )
        == 0
    )
    comparison = json.loads((out / "results.json").read_text())["comparisons"]["apl"]
    assert comparison["eval_map"]["delta"] == pytest.approx(0.2)
    assert comparison["eval_map"]["p_value"] == pytest.approx(1 / 101)
    assert set(comparison["eval_map"]["p_value_per_seed"]) == {"1", "2", "3"}
    assert comparison["eval_map"]["p_value_seeds"] is None  # +0.2 on every seed
    assert comparison["eval_f1_macro"]["test"] == "paired bootstrap, pooled over seeds"
    assert (out / "reliability.png").is_file() and not (out / "p_y_distribution.png").exists()

    before = (out / "results.json").read_bytes()
    flags = ["--output_dir", str(out), "--no_progress", "--bootstrap_samples", "100", "--baseline", "apl"]
    assert main([str(grid), *flags], scripts_dir=stand_in) == 0
    against_apl = json.loads((out / "results-vs-apl.json").read_text())
    assert against_apl["grid"]["baseline"] == "apl" and set(against_apl["comparisons"]) == {"bce"}
    assert against_apl["comparisons"]["bce"]["eval_map"]["delta"] == pytest.approx(-0.2)
    assert "## Against the baseline `apl`" in (out / "report-vs-apl.md").read_text()
    assert (out / "results.json").read_bytes() == before  # the grid's own report is untouched
    assert len(calls(out)) == 6  # no run started


def test_another_baseline_must_be_a_variant(tmp_path, stand_in, capsys):
    grid = write_grid(tmp_path / "grid.yaml")
    assert (
        main([str(grid), "--output_dir", str(tmp_path / "out"), "--baseline", "el"], scripts_dir=stand_in)
        == 2
    )
    assert (
        capsys.readouterr().err.strip()
        == "compare.py: error: --baseline 'el' is not a variant; variants: ce, cel"
    )
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_unfinished_commands(tmp_path, stand_in, capsys):
    grid = write_grid(tmp_path / "grid.yaml")
    assert main([str(grid), "--output_dir", str(tmp_path / "out"), "--dry_run"], scripts_dir=stand_in) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].endswith(
        f"--loss ce --seed 1 --output_dir {tmp_path / 'out' / 'ce' / 'seed-1'}"
    )


# ------------------------------------------------------------------------------------------ the real script


@pytest.mark.slow  # five script subprocesses: 150 s on the shared 2-core machine, mostly importing torch
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
