"""The ``hf-losses`` command (``hf_losses.cli``) and the checkout's scripts, which call the same applications."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hf_losses import cli
from hf_losses.apps import RECIPES

ROOT = Path(__file__).resolve().parents[1]


def test_commands_dispatch_with_the_flags_of_their_application(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hf-losses", "classify", "--help"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith("usage: hf-losses classify") and "--gamma_neg" in out
    monkeypatch.setattr(sys, "argv", ["hf-losses", "translate", "--bogus", "1"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err == "hf-losses translate: error: unrecognized arguments: --bogus 1"


def test_compare_errors_and_reports_name_the_command_the_user_ran(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["hf-losses", "compare", str(tmp_path / "missing.yaml")])
    assert cli.main() == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("hf-losses compare: error: ") and "missing.yaml" in err and len(err.splitlines()) == 1
    )


def test_unknown_or_missing_command(capsys):
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err.strip() == (
        "hf-losses: error: unknown command 'train'; commands: translate, classify, compare"
    )
    assert cli.main([]) == 2 and "demo-translate" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage: hf-losses {translate,")


def test_a_shipped_recipe_is_found_by_name():
    assert (RECIPES / "demo-translate.yaml").is_file() and (ROOT / "scripts" / "recipes").resolve() == RECIPES
    assert cli.with_shipped_recipe(["opus-mt-de-en-cel", "--loss", "ce"]) == [
        str(RECIPES / "opus-mt-de-en-cel.yaml"),
        "--loss",
        "ce",
    ]
    assert cli.with_shipped_recipe(["my.yaml"]) == ["my.yaml"]
    assert cli.with_shipped_recipe(["--loss", "ce"]) == ["--loss", "ce"]


def test_recipe_names_reach_the_parser(monkeypatch):
    from hf_losses.apps import translate

    argv = cli.with_shipped_recipe(
        ["opus-mt-de-en-cel", "--learning_rate", "1e-5", "--bf16", "false", "--output_dir", "x"]
    )
    model_args, _, args, _ = translate.make_parser().parse_args_and_recipe(argv)
    assert model_args.model_name_or_path == "Helsinki-NLP/opus-mt-de-en" and args.learning_rate == 1e-5


def test_checkout_script_still_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "translate.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        result.returncode == 0
        and result.stdout.startswith("usage: translate.py")
        and "--log_end" in result.stdout
    )
