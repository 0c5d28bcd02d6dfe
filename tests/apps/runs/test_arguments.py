"""hf_losses.apps.runs.arguments: recipes and the flags that override them, the layers of defaults, split selection."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from hf_losses import EncouragingSeq2SeqConfig, MultiLabelConfig
from hf_losses.apps.runs import (
    DataSourceArguments,
    ModelSourceArguments,
    RecipeParser,
    RunArguments,
    UsageError,
)
from hf_losses.apps.runs.arguments import check_label_names

TYPES = (ModelSourceArguments, DataSourceArguments, EncouragingSeq2SeqConfig, RunArguments)


def parser(tmp_path, **kwargs) -> RecipeParser:
    demo = tmp_path / "demo.yaml"
    demo.write_text("output_dir: demo-out\nnum_train_epochs: 7\nloss: el\n")
    return RecipeParser(TYPES, demo_recipe=demo, **kwargs)


def test_recipe_file_and_flags_that_override_it(tmp_path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "output_dir: out\nloss: el\nbonus_weight: 0.5\nlearning_rate: 2e-3\ndo_train: true\ntrain_file: t.jsonl\n"
    )
    _, data, args, run = parser(tmp_path).parse_args_and_recipe([str(recipe), "--learning_rate", "1e-4"])
    assert (args.loss, args.bonus_weight, args.learning_rate, args.do_train) == ("el", 0.5, 1e-4, True)
    assert data.train_file == str(tmp_path / "t.jsonl") and run.overwrite_output_dir is False
    assert args.num_train_epochs == 3  # a recipe file replaces the demo recipe, it does not stack on it


def test_recipe_paths_are_relative_to_the_recipe_folder_and_outputs_to_the_working_directory(
    tmp_path, monkeypatch
):
    folder = tmp_path / "recipes"
    (folder / "data").mkdir(parents=True)
    (folder / "tiny").mkdir()
    (folder / "config.json").write_text("{}")
    recipe = folder / "run.yaml"
    recipe.write_text(
        "output_dir: out\ntrain_file: data/t.jsonl\nvalidation_file: /abs/v.jsonl\n"
        "model_name_or_path: tiny\ntokenizer_name: org/tokenizer\ndataset_name: org/data\n"
    )
    monkeypatch.chdir(tmp_path)
    model, data, args, _ = parser(tmp_path).parse_args_and_recipe([str(recipe.relative_to(tmp_path))])
    assert data.train_file == str(Path("recipes") / "data" / "t.jsonl")  # always a path: resolved
    assert data.validation_file == "/abs/v.jsonl"  # absolute: kept
    assert model.model_name_or_path == str(Path("recipes") / "tiny")  # exists next to the recipe
    assert (model.tokenizer_name, data.dataset_name) == ("org/tokenizer", "org/data")  # Hub ids: kept
    assert args.output_dir == "out"  # outputs: relative to the working directory
    _, data, _, _ = parser(tmp_path).parse_args_and_recipe([str(recipe), "--train_file", "cli.jsonl"])
    assert data.train_file == "cli.jsonl"  # a flag is relative to the working directory


def test_a_loss_on_the_command_line_drops_the_recipes_knobs_it_pins_with_a_warning(tmp_path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text("output_dir: out\ntrain_file: t\nloss: cel\nlog_end: 0.5\nbonus_weight: 0.5\n")
    with pytest.warns(UserWarning, match=r"--log_end 0.5 was set for --loss cel .* --loss el"):
        _, _, args, _ = parser(tmp_path).parse_args_and_recipe([str(recipe), "--loss", "el"])
    assert (args.loss, args.log_end, args.bonus_weight) == ("el", None, 0.5)  # bonus_weight is not pinned
    assert args.loss_settings()["log_end"] == 1.0
    with pytest.warns(UserWarning) as caught:
        _, _, args, _ = parser(tmp_path).parse_args_and_recipe([str(recipe), "--loss=ce"])
    assert (args.log_end, args.bonus_weight) == (None, None)
    assert sorted(str(w.message).split()[0] for w in caught) == ["--bonus_weight", "--log_end"]


@pytest.mark.parametrize(
    "recipe_text, flags",
    [
        ("output_dir: out\ntrain_file: t\n", ["--loss", "el", "--log_end", "0.5"]),  # one command line
        ("output_dir: out\ntrain_file: t\nloss: el\nlog_end: 0.5\n", []),  # one recipe
        ("output_dir: out\ntrain_file: t\nloss: cel\nlog_end: 0.5\n", ["--loss", "el", "--log_end", "0.5"]),
    ],
)
def test_a_knob_set_at_the_same_level_as_a_loss_that_pins_it_is_an_error(tmp_path, recipe_text, flags):
    recipe = tmp_path / "run.yaml"
    recipe.write_text(recipe_text)
    with pytest.raises(ValueError, match="--log_end does not apply to --loss el"):
        parser(tmp_path).parse_args_and_recipe([str(recipe), *flags])


def test_json_recipe(tmp_path):
    recipe = tmp_path / "run.json"
    recipe.write_text('{"output_dir": "out", "loss": "ce", "train_file": "t.jsonl"}')
    _, _, args, _ = parser(tmp_path).parse_args_and_recipe([str(recipe)])
    assert args.loss == "ce"


def test_demo_recipe_only_without_data_or_model_arguments(tmp_path):
    _, _, args, _ = parser(tmp_path).parse_args_and_recipe(["--loss", "cel"])
    assert (args.output_dir, args.num_train_epochs, args.loss) == ("demo-out", 7, "cel")
    for flag in (
        "--train_file",
        "--validation_file",
        "--test_file",
        "--dataset_name",
        "--model_name_or_path",
    ):
        _, _, args, _ = parser(tmp_path).parse_args_and_recipe([flag, "x", "--output_dir", "o"])
        assert (args.output_dir, args.num_train_epochs, args.loss) == ("o", 3, "cel"), flag


def test_scratch_defaults_only_without_a_pretrained_model_and_under_recipe_and_flags(tmp_path):
    scratch = dict(learning_rate=1e-3, num_train_epochs=16, seed=0)
    make = lambda: parser(tmp_path, scratch_defaults=scratch)  # noqa: E731
    _, _, args, _ = make().parse_args_and_recipe(["--train_file", "t", "--output_dir", "o", "--seed", "3"])
    assert (args.learning_rate, args.num_train_epochs, args.seed) == (1e-3, 16, 3)
    _, _, args, _ = make().parse_args_and_recipe(["--loss", "ce"])  # the demo recipe wins over them
    assert (args.learning_rate, args.num_train_epochs) == (1e-3, 7)
    _, _, args, _ = make().parse_args_and_recipe(["--model_name_or_path", "m", "--output_dir", "o"])
    assert (args.learning_rate, args.num_train_epochs, args.seed) == (5e-5, 3, 42)


def test_flags_as_the_comparison_runner_writes_them(tmp_path):
    _, data, args, _ = parser(tmp_path).parse_args_and_recipe(
        ["--train_file", "t", "--do_train", "true", "--do_eval", "false", "--seed", "2", "--output_dir", "o"]
    )
    assert (args.do_train, args.do_eval, args.seed, data.train_file) == (True, False, 2, "t")


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--output_dir", "o", "--no_such_flag", "1"], ["--no_such_flag"]),
        (["missing.yaml"], ["missing.yaml", "does not exist"]),
    ],
)
def test_bad_command_lines_are_usage_errors(tmp_path, argv, fragments):
    with pytest.raises(UsageError) as error:
        parser(tmp_path).parse_args_and_recipe(argv)
    assert all(fragment in str(error.value) for fragment in fragments)


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("output_dir: o\nlearning_rte: 1e-4\n", ["learning_rte", "unknown setting"]),
        ("- a list\n", ["mapping"]),
        ("output_dir: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_bad_recipes_are_usage_errors(tmp_path, text, fragments):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(UsageError) as error:
        parser(tmp_path).parse_args_and_recipe([str(recipe)])
    assert all(fragment in str(error.value) for fragment in fragments)


def test_label_names_other_than_labels_point_to_the_right_flag(tmp_path):
    check_label_names(MultiLabelConfig(output_dir=str(tmp_path)), "use --class_names")
    check_label_names(MultiLabelConfig(output_dir=str(tmp_path), label_names=["labels"]), "use --class_names")
    with pytest.raises(UsageError, match="--label_names admiration amusement.*use --class_names"):
        check_label_names(
            MultiLabelConfig(output_dir=str(tmp_path), label_names=["admiration", "amusement"]),
            "use --class_names",
        )


def test_select_splits_cuts_the_wanted_ones_and_keeps_the_task_extras(tmp_path):
    rows = {"x": list(range(10))}
    splits = {
        name: datasets.Dataset.from_dict(rows) for name in ("train", "validation", "test", "held", "other")
    }
    data = DataSourceArguments(max_train_samples=4, max_eval_samples=20)
    args = MultiLabelConfig(output_dir=str(tmp_path), do_train=True, do_eval=True)
    kept = data.select_splits(splits, args, extra=("held",))
    assert {name: len(ds) for name, ds in kept.items()} == {"held": 10, "train": 4, "validation": 10}
    args.do_predict = True
    with pytest.raises(UsageError, match="--do_predict needs a test split; the data has: train, validation"):
        data.select_splits({k: splits[k] for k in ("train", "validation")}, args)
