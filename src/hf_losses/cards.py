"""Model cards: a README.md with a Hub `model-index`, rendered from the Jinja templates shipped in the package.

The templates are `hf_losses/templates/translation.md` and `classification.md`, read with `importlib.resources`
(``template_dir`` points `render_model_card` at other copies).

Inputs. ``dataset`` describes the data (a :class:`DatasetInfo` or a dict with its fields): ``id`` (Hub id or
local path; "unknown" when not known), and optionally ``name``, ``config``, ``train_split``, ``split`` (the split
the metrics come from), ``revision``, ``source_lang`` / ``target_lang`` (translation), ``language`` and
``label_names`` (classification). ``loss`` holds the loss settings, its name under ``loss``; ``loss_label`` and
``is_method`` say how to name it and whether it is the library's method or a baseline. ``metrics`` may use the
Trainer's prefixes (``eval_bleu``, ``test_f1_micro``: pass one split's metrics) and may carry the sacreBLEU
signatures (``bleu_signature``, ``chrf_signature``); non-finite values are dropped, and without the task's
headline metrics the card says "not evaluated yet" and has no `model-index` results. ``extra`` may give
``license``, ``model_id`` (for the usage snippet), ``tags``, ``language``, ``threshold``, ``threshold_tuned``,
``threshold_split``, ``class_thresholds``, ``label_names``, ``example_input`` and ``notes``.

Secrets. Every key containing "token", "secret", "password", "api_key" or "credential" (e.g. ``hub_token``)
and every value that looks like a Hugging Face access token are left out of the card.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data.translation import language_name
from .files import replaced_atomically

__all__ = ["DatasetInfo", "loss_section", "render_model_card", "write_model_card"]

_SECRET_KEY = re.compile(r"token|secret|password|api_?key|credential", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{20,}")
_SPLIT_PREFIX = re.compile(r"^(eval|test|predict)_")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclasses.dataclass
class DatasetInfo:
    """What a model card says about the data; ``split`` is the split its metrics come from."""

    id: str = "unknown"
    name: str | None = None
    config: str | None = None
    revision: str | None = None
    train_split: str | None = "train"
    split: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    language: str | None = None
    label_names: list[str] | None = None
    prompt_template: str | None = None  # decoder-only translation: the prompt each source was written into

    @classmethod
    def from_dataset(cls, dataset: Any) -> DatasetInfo:
        """What a `datasets.Dataset` knows about itself (its `info`), "unknown" for anything else."""
        info = getattr(dataset, "info", None)
        name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
        if not name:
            return cls()
        return cls(id=name, config=getattr(info, "config_name", None))


# Per task: template, Hub task, tags, results-table rows (key, label, format) and model-index entries
# (key, metric type, metric name, metric args).
_TASKS: dict[str, dict[str, Any]] = {
    "translation": {
        "template": "translation.md",
        "task_type": "translation",
        "task_name": "Translation",
        "tags": ["translation", "hf_losses"],
        "method_tag": "encouraging-loss",
        "metric_ids": ["sacrebleu", "chrf"],
        "rows": [
            ("bleu", "BLEU", ".2f"),
            ("chrf", "chrF", ".2f"),
            ("gen_len", "gen_len (mean generated tokens)", ".2f"),
            ("nll_loss", "NLL per token", ".4f"),
            ("loss", "training objective (loss)", ".4f"),
        ],
        "index": [("bleu", "sacrebleu", "BLEU", None), ("chrf", "chrf", "chrF", None)],
        "loss_keys": [
            "loss",
            "bonus",
            "bonus_power",
            "log_end",
            "bonus_start",
            "bonus_weight",
            "bonus_schedule",
            "label_smoothing_factor",
            "bonus_smoothing",
        ],
        "packages": ["transformers", "torch", "datasets", "accelerate", "sacrebleu", "hf_losses"],
    },
    "classification": {
        "template": "classification.md",
        "task_type": "text-classification",
        "task_name": "Multi-label text classification",
        "tags": ["text-classification", "multi-label-classification", "hf_losses"],
        "method_tag": "asymmetric-polynomial-loss",
        "metric_ids": ["f1", "precision", "recall"],
        "rows": [
            ("f1_micro", "F1 (micro)", ".4f"),
            ("f1_macro", "F1 (macro)", ".4f"),
            ("precision_micro", "Precision (micro)", ".4f"),
            ("precision_macro", "Precision (macro)", ".4f"),
            ("recall_micro", "Recall (micro)", ".4f"),
            ("recall_macro", "Recall (macro)", ".4f"),
            ("map", "mAP", ".4f"),
            ("p@1", "P@1", ".4f"),
            ("p@3", "P@3", ".4f"),
            ("p@5", "P@5", ".4f"),
            ("ndcg@1", "nDCG@1", ".4f"),
            ("ndcg@3", "nDCG@3", ".4f"),
            ("ndcg@5", "nDCG@5", ".4f"),
            ("hamming_loss", "Hamming loss", ".4f"),
            ("loss", "training objective (loss)", ".4f"),
        ],
        "index": [
            ("f1_micro", "f1", "F1 (micro)", {"average": "micro"}),
            ("f1_macro", "f1", "F1 (macro)", {"average": "macro"}),
            ("map", "mean_average_precision", "mAP", None),
            *[(f"p@{k}", f"precision@{k}", f"P@{k}", None) for k in (1, 3, 5)],
            *[(f"ndcg@{k}", f"ndcg@{k}", f"nDCG@{k}", None) for k in (1, 3, 5)],
            ("hamming_loss", "hamming_loss", "Hamming loss", None),
        ],
        "loss_keys": [
            "loss",
            "gamma_pos",
            "gamma_neg",
            "clip",
            "alpha1",
            "alpha2",
            "beta1",
            "detach_focusing_weight",
            "poly_epsilon",
        ],
        "packages": ["transformers", "torch", "datasets", "accelerate", "scikit-learn", "hf_losses"],
    },
}
_ALIASES = {
    "text-classification": "classification",
    "multilabel": "classification",
    "multi-label": "classification",
}
_EXAMPLE_INPUT = {
    "de": "Das Haus ist wunderbar.",
    "fr": "La maison est magnifique.",
    "en": "The house is wonderful.",
}


def _public(mapping: dict[str, Any] | None) -> dict[str, Any]:
    """Copy of a mapping without secret-looking keys or token-looking values (recursively)."""
    out: dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        if _SECRET_KEY.search(str(key)) or (isinstance(value, str) and _SECRET_VALUE.search(value)):
            continue
        out[str(key)] = _public(value) if isinstance(value, dict) else value
    return out


def _cell(value: Any) -> str:
    """A value formatted for one Markdown table cell."""
    value = getattr(value, "value", value)  # enums such as IntervalStrategy
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(mapping: dict[str, Any], first: list[str] | None = None) -> list[tuple[str, str]]:
    """(key, formatted value) pairs, the keys in ``first`` leading in that order."""
    keys = [k for k in first or [] if k in mapping] + [k for k in mapping if k not in (first or [])]
    return [(_cell(k), _cell(mapping[k])) for k in keys]


def _clean_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Metrics without split prefixes; numbers as finite floats, signature strings kept, the rest dropped."""
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        key = _SPLIT_PREFIX.sub("", str(key))
        if key in out:
            continue
        if isinstance(value, str):
            if key.endswith("signature"):
                out[key] = value
            continue
        if isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def _as_list(value: Any) -> list[Any]:
    """None -> [], a string -> [string], any other iterable -> list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _is_hub_id(name: str | None) -> bool:
    """Whether a string looks like a Hub repo id rather than a local path."""
    return (
        bool(name)
        and name != "unknown"
        and bool(_HUB_ID.match(name))
        and not name.startswith(".")
        and not Path(name).exists()
    )


def _versions(packages: list[str]) -> list[tuple[str, str]]:
    """Installed versions of the given distributions, read at render time."""
    rows = []
    for name in packages:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        rows.append((name, version))
    return rows


def _read_template(name: str, template_dir: str | os.PathLike | None) -> str:
    """A template's text: from `template_dir` when given, else from the package."""
    path = (
        Path(template_dir) / name
        if template_dir is not None
        else resources.files("hf_losses") / "templates" / name
    )
    if not path.is_file():
        raise FileNotFoundError(f"model card template {path} not found")
    return path.read_text(encoding="utf-8")


def render_model_card(
    task: str,
    *,
    model_name: str,
    base_model: str | None,
    dataset: DatasetInfo | dict[str, Any] | None,
    loss: dict[str, Any],
    loss_label: str,
    is_method: bool,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any] | None,
    extra: dict[str, Any] | None = None,
    template_dir: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the translation or classification card: YAML metadata with `model-index` plus Markdown body."""
    task = _ALIASES.get(task, task)
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_TASKS)}")
    if isinstance(dataset, DatasetInfo):
        dataset = dataclasses.asdict(dataset)
    dataset = {k: v for k, v in (dataset or {}).items() if v is not None}
    dataset.setdefault("id", "unknown")
    spec = _TASKS[task]
    extra = _public(extra)
    loss = _public(loss)
    hparams = _public(hyperparameters)
    values = _clean_metrics(metrics)
    ds = {k: dataset.get(k) for k in ("id", "name", "config", "train_split", "split", "revision")}
    ds["name"] = ds["name"] or ds["id"]

    eval_results = [
        EvalResult(
            task_type=spec["task_type"],
            task_name=spec["task_name"],
            dataset_type=ds["id"],
            dataset_name=ds["name"],
            dataset_config=ds["config"],
            dataset_split=ds["split"],
            dataset_revision=ds["revision"],
            metric_type=metric_type,
            metric_name=metric_name,
            metric_args=metric_args,
            metric_value=values[key],
        )
        for key, metric_type, metric_name, metric_args in spec["index"]
        if key in values
    ]
    if task == "translation":
        languages = [dataset.get("source_lang"), dataset.get("target_lang")]
    else:
        languages = [dataset.get("language")]
    languages = _as_list(extra.get("language")) or [lang for lang in dict.fromkeys(languages) if lang]
    tags = spec["tags"] + ([spec["method_tag"]] if is_method else []) + _as_list(extra.get("tags"))
    decoder_only = bool(extra.get("decoder_only"))  # a causal LM: prompted, so a text-generation model
    card_data = ModelCardData(
        language=languages or None,
        license=extra.get("license"),
        library_name="transformers",
        pipeline_tag="text-generation" if decoder_only else spec["task_type"],
        tags=list(dict.fromkeys(tags)),
        datasets=[ds["id"]] if _is_hub_id(ds["id"]) else None,
        base_model=base_model if _is_hub_id(base_model) else None,
        metrics=spec["metric_ids"],
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )

    threshold = extra.get("threshold", hparams.get("threshold"))
    source_lang = dataset.get("source_lang")
    example_input = extra.get("example_input", _EXAMPLE_INPUT.get(str(source_lang), "A short example text."))
    generate_kwargs = {
        "num_beams": hparams.get("generation_num_beams"),
        "max_new_tokens": hparams.get("generation_max_length"),
    }
    template_kwargs = {
        "model_name": model_name,
        "model_id": extra.get("model_id", model_name),
        "base_model": base_model,
        "base_model_is_hub": _is_hub_id(base_model),
        "dataset": ds,
        "dataset_is_hub": _is_hub_id(ds["id"]),
        "dataset_rows": [
            (label, ds[key])
            for key, label in (
                ("id", "Dataset"),
                ("config", "Config"),
                ("train_split", "Training split"),
                ("split", "Evaluation split"),
                ("revision", "Revision"),
            )
            if ds[key]
        ],
        "source_lang": source_lang,
        "target_lang": dataset.get("target_lang"),
        "label_names": list(extra.get("label_names") or dataset.get("label_names") or []),
        "loss_name": loss.get("loss", loss.get("name", "apl" if task == "classification" else "cel")),
        "is_method": is_method,
        "method_label": loss_label,
        "loss_settings": loss,
        "loss_rows": _rows(loss, spec["loss_keys"]),
        "hyperparameter_rows": _rows(hparams),
        "result_rows": [
            (label, format(values[key], fmt)) for key, label, fmt in spec["rows"] if key in values
        ],
        "evaluated": bool(eval_results),
        "bleu_signature": values.get("bleu_signature"),
        "chrf_signature": values.get("chrf_signature"),
        "threshold": threshold,
        "threshold_tuned": bool(extra.get("threshold_tuned", False)),
        "threshold_split": extra.get("threshold_split"),
        "class_thresholds": extra.get("class_thresholds"),
        "class_threshold_rows": _class_threshold_rows(
            extra.get("class_thresholds"), extra.get("label_names") or dataset.get("label_names")
        ),
        "generate_kwargs": "".join(f", {k}={v}" for k, v in generate_kwargs.items() if v is not None),
        "example_input": example_input,
        "decoder_only": decoder_only,
        "example_prompt": _example_prompt(dataset, example_input),
        "versions": _versions(spec["packages"]),
        "notes": extra.get("notes"),
    }
    template = _read_template(spec["template"], template_dir)
    card = ModelCard.from_template(card_data, template_str=template, **template_kwargs)
    card.text = "\n" + re.sub(r"\n{3,}", "\n\n", card.text).strip("\n") + "\n"
    return card


def _example_prompt(dataset: dict[str, Any], example_input: str) -> str | None:
    """The prompt of ``example_input`` as a Python literal, where the card knows the prompt template."""
    template = dataset.get("prompt_template")
    if template is None:
        return None
    names = {key: language_name(str(dataset.get(key))) for key in ("source_lang", "target_lang")}
    return repr(template.format(source=example_input, **names))


def _class_threshold_rows(thresholds: list[float] | None, names: list[str] | None) -> list[tuple[str, str]]:
    """(label name, threshold) pairs; labels without a name are named by index."""
    if not thresholds:
        return []
    names = list(names or [])
    return [(names[i] if i < len(names) else str(i), f"{t:g}") for i, t in enumerate(thresholds)]


def write_model_card(card: ModelCard | str, output_dir: str | os.PathLike) -> Path:
    """Write `output_dir/README.md` atomically (see :func:`hf_losses.files.replaced_atomically`), synced to disk."""
    target = Path(output_dir) / "README.md"
    with replaced_atomically(target) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(str(card))
        handle.flush()
        os.fsync(handle.fileno())
    return target


# -- a trainer's card --------------------------------------------------------------------------------------
# The fields of TrainingArguments worth a line in a model card.
CARD_TRAINING_ARGUMENTS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "seed",
    "optim",
    "bf16",
    "fp16",
)


def loss_section(args, final_model: dict[str, str]) -> str:
    """A Markdown section for a card another library writes (TRL's): the loss ``args`` set (an
    ``EncouragingLossArguments`` config) and how the final weights were formed (``final_model``: name -> text)."""
    loss = (
        f"the {args.preset.label} of Zhao et al. (AAAI 2022)"
        if not args.preset.baseline
        else f"the `{args.loss}` baseline loss (no encouraging bonus)"
    )
    lines = [
        "## Loss and final weights (hf_losses)",
        "",
        f"Trained with the `hf_losses` library using {loss}.",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| `{key}` | {value} |" for key, value in _rows(_public(args.loss_settings()) | final_model)),
    ]
    if not args.preset.baseline:
        lines += [
            "",
            "The logged `loss` includes the bonus, so it is not comparable with a cross-entropy model's loss; "
            "compare `nll_loss`, logged beside it.",
        ]
    return "\n".join(lines) + "\n"


def training_hyperparameters(args) -> dict:
    """The training hyperparameters worth a line in a model card, with the total train batch size."""
    values = {k: getattr(args, k) for k in CARD_TRAINING_ARGUMENTS if hasattr(args, k)}
    values["total_train_batch_size"] = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    )
    return values


def split_for_card(split_metrics: dict[str, dict[str, Any]]) -> tuple[str | None, dict[str, Any]]:
    """(split, metrics without their prefix) of the evaluations by metric prefix: the test split if evaluated,
    else validation, else any other; (None, {}) before any evaluation."""
    if not split_metrics:
        return None, {}
    prefix = next((p for p in ("test", "eval") if p in split_metrics), next(iter(split_metrics)))
    split = {"test": "test", "eval": "validation"}.get(prefix, prefix.removeprefix("eval_"))
    return split, {k.removeprefix(f"{prefix}_"): v for k, v in split_metrics[prefix].items()}


def _first(value: Any) -> Any:
    values = _as_list(value)
    return values[0] if values else None


def trainer_model_card(
    task: str,
    *,
    args,
    model,
    dataset_info: DatasetInfo,
    split: str | None,
    metrics: dict[str, Any],
    hyperparameters: dict[str, Any],
    extra: dict[str, Any],
    tags: list[str],
    stock_arguments: dict[str, Any],
) -> ModelCard:
    """The card of a trainer's run: ``args`` its config (loss settings and preset, Hub id, output_dir),
    ``model`` the unwrapped model; ``stock_arguments`` those of ``Trainer.create_model_card`` (model_name,
    finetuned_from, tags, tasks, dataset_tags, dataset, dataset_args, language, license), which win."""
    given = stock_arguments
    dataset = DatasetInfo(**{**vars(dataset_info), "split": split or dataset_info.split})
    if given.get("dataset_tags") or given.get("dataset"):
        dataset.id = _first(given.get("dataset_tags")) or _first(given.get("dataset"))
        dataset.name = _first(given.get("dataset")) or dataset.name
        dataset.config = _first(given.get("dataset_args")) or dataset.config
    all_tags = [
        *tags,
        *(getattr(model, "model_tags", None) or []),
        *_as_list(given.get("tags")),
        *_as_list(given.get("tasks")),
    ]
    extra = {**extra, "tags": list(dict.fromkeys(all_tags))}
    for key in ("language", "license"):
        if given.get(key):
            extra[key] = given[key]
    name = given.get("model_name") or (args.hub_model_id or "").split("/")[-1]
    return render_model_card(
        task,
        model_name=name or Path(args.output_dir).name,
        base_model=given.get("finetuned_from") or getattr(model.config, "_name_or_path", None) or None,
        dataset=dataset,
        loss=args.loss_settings(),
        loss_label=args.preset.label,
        is_method=not args.preset.baseline,
        hyperparameters=hyperparameters,
        metrics=metrics,
        extra=extra,
    )
