"""Model cards: rendered text, model-index metadata, round trips, secrets."""

import os
import shutil
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load

from hf_losses.cards import render_model_card, write_model_card

TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "hf_losses" / "templates"
BLEU_SIG = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
CHRF_SIG = "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
SECRET = "hf_" + "A1b2C3d4" * 5

TRANSLATION = dict(
    model_name="opus-mt-de-en-cel",
    base_model="Helsinki-NLP/opus-mt-de-en",
    dataset={
        "id": "IWSLT/iwslt2017",
        "config": "iwslt2017-de-en",
        "train_split": "train",
        "split": "test",
        "revision": "refs/convert/parquet",
        "source_lang": "de",
        "target_lang": "en",
    },
    loss={"loss": "cel", "log_end": 0.5, "bonus_weight": 1.0, "label_smoothing_factor": 0.1},
    loss_label="conservative encouraging loss (CEL)",
    is_method=True,
    hyperparameters={"learning_rate": 0.0005, "seed": 7, "hub_token": SECRET, "push_to_hub": False},
    metrics={
        "eval_bleu": 35.4321,
        "eval_chrf": 58.765,
        "eval_gen_len": 27.25,
        "eval_nll_loss": 2.125,
        "eval_runtime": 1.5,
        "bleu_signature": BLEU_SIG,
        "chrf_signature": CHRF_SIG,
    },
    extra={"license": "apache-2.0", "model_id": "someone/opus-mt-de-en-cel"},
)

CLASSIFICATION = dict(
    model_name="bert-go-emotions-apl",
    base_model="google-bert/bert-base-uncased",
    dataset={
        "id": "google-research-datasets/go_emotions",
        "config": "simplified",
        "split": "test",
        "language": "en",
        "label_names": ["admiration", "amusement", "anger"],
    },
    loss={
        "loss": "apl",
        "gamma_pos": 0.0,
        "gamma_neg": 4.0,
        "clip": 0.05,
        "alpha1": -1.0,
        "alpha2": 1.25,
        "beta1": 0.0,
        "detach_focusing_weight": True,
        "poly_epsilon": 0.0,
    },
    loss_label="asymmetric polynomial loss (APL)",
    is_method=True,
    hyperparameters={"learning_rate": 2e-5, "num_train_epochs": 3},
    metrics={
        "eval_f1_micro": 0.6123,
        "eval_f1_macro": 0.4567,
        "eval_map": 0.5012,
        "eval_p@1": 0.75,
        "eval_p@3": 0.4,
        "eval_p@5": 0.3,
        "eval_ndcg@1": 0.75,
        "eval_ndcg@3": 0.7,
        "eval_ndcg@5": 0.72,
        "eval_hamming_loss": 0.0312,
    },
    extra={"threshold": 0.35, "threshold_tuned": True, "threshold_split": "validation"},
)


def _results(card):
    index = card.data.to_dict()["model-index"]
    assert len(index) == 1 and index[0]["name"] == card.data.model_name
    assert len(index[0]["results"]) == 1
    return index[0]["results"][0]


def test_translation_card_text():
    card = render_model_card("translation", **TRANSLATION)
    text = card.text
    for needle in ("`log_end` | 0.5", "`bonus_weight` | 1", "`label_smoothing_factor` | 0.1", "`loss` | cel"):
        assert needle in text
    assert "conservative encouraging loss (CEL)" in text
    assert "not be compared" in text and "nll_loss" in text
    assert "| BLEU | 35.43 |" in text and "| chrF | 58.77 |" in text and "27.25" in text
    assert f"`{BLEU_SIG}`" in text and f"`{CHRF_SIG}`" in text
    assert "[Helsinki-NLP/opus-mt-de-en](https://huggingface.co/Helsinki-NLP/opus-mt-de-en)" in text
    assert "iwslt2017-de-en" in text and "refs/convert/parquet" in text
    assert 'from_pretrained("someone/opus-mt-de-en-cel")' in text
    assert "Well-Classified Examples Are Underestimated in Classification with Deep Neural Networks" in text
    assert (
        "Zhao, Guangxiang and Yang, Wenkai and Ren, Xuancheng and Li, Lei and Wu, Yunfang and Sun, Xu" in text
    )
    assert f"transformers {metadata.version('transformers')}" in text
    assert f"sacrebleu {metadata.version('sacrebleu')}" in text
    assert "| `learning_rate` | 0.0005 |" in text
    assert "Not evaluated yet" not in text
    assert "eval_runtime" not in text and "1.5" not in text.split("## Results")[1].split("## How")[0]


def test_a_decoder_only_translation_card_shows_the_prompt_and_decodes_the_new_tokens():
    dataset = {
        **TRANSLATION["dataset"],
        "prompt_template": "Translate {source_lang} to {target_lang}:\n{source}\n",
    }
    extra = {**TRANSLATION["extra"], "decoder_only": True}
    card = render_model_card("translation", **{**TRANSLATION, "dataset": dataset, "extra": extra})
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.to_dict()["model-index"][0]["results"][0]["task"]["type"] == "translation"
    how = card.text.split("## How to use")[1]
    assert "AutoModelForCausalLM" in how and "AutoModelForSeq2SeqLM" not in how
    assert "prompt = 'Translate German to English:\\nDas Haus ist wunderbar.\\n'" in how
    assert 'outputs[:, inputs["input_ids"].shape[1]:]' in how
    plain = render_model_card("translation", **TRANSLATION)
    assert plain.data.pipeline_tag == "translation" and "AutoModelForCausalLM" not in plain.text


def test_translation_model_index():
    card = render_model_card("translation", **TRANSLATION)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["base_model"] == "Helsinki-NLP/opus-mt-de-en"
    assert data["datasets"] == ["IWSLT/iwslt2017"]
    assert data["language"] == ["de", "en"]
    assert data["license"] == "apache-2.0"
    assert {"hf_losses", "encouraging-loss", "translation"} <= set(data["tags"])
    result = _results(card)
    assert result["task"]["type"] == "translation"
    assert result["dataset"] == {
        "name": "IWSLT/iwslt2017",
        "type": "IWSLT/iwslt2017",
        "config": "iwslt2017-de-en",
        "split": "test",
        "revision": "refs/convert/parquet",
    }
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"sacrebleu": pytest.approx(35.4321), "chrf": pytest.approx(58.765)}


def test_written_card_round_trips(tmp_path):
    card = render_model_card("translation", **TRANSLATION)
    (tmp_path / "README.md").write_text("old", encoding="utf-8")
    path = write_model_card(card, tmp_path)
    assert path == tmp_path / "README.md"
    assert os.listdir(tmp_path) == ["README.md"]  # no temporary file left behind
    raw = path.read_text(encoding="utf-8")
    assert raw == str(card)
    front = yaml.safe_load(raw.split("---\n")[1])
    assert front == metadata_load(path) == card.data.to_dict()
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(35.4321)
    loaded = ModelCard.load(path)
    assert loaded.data.eval_results[0].metric_value == pytest.approx(35.4321)
    assert loaded.data.eval_results[0].dataset_revision == "refs/convert/parquet"


def test_secrets_are_filtered(tmp_path):
    kwargs = dict(TRANSLATION)
    kwargs["hyperparameters"] = {
        **TRANSLATION["hyperparameters"],
        "push_to_hub_token": "secret-value-1",
        "HUB_TOKEN": "secret-value-2",
        "nested": {"token": "secret-value-3", "ok": 1},
        "innocent_key": SECRET,
    }
    kwargs["extra"] = {**TRANSLATION["extra"], "token": "secret-value-4"}
    content = str(render_model_card("translation", **kwargs))
    write_model_card(content, tmp_path)
    written = (tmp_path / "README.md").read_text(encoding="utf-8")
    for text in (content, written):
        assert "hub_token" not in text.lower() and SECRET not in text and "innocent_key" not in text
        assert not any(f"secret-value-{i}" in text for i in range(1, 5))
    assert "| `seed` | 7 |" in content


def test_card_without_metrics_has_no_results():
    for metrics in ({}, None, {"eval_bleu": float("nan")}, {"eval_loss": 1.2}):
        card = render_model_card("translation", **{**TRANSLATION, "metrics": metrics})
        data = card.data.to_dict()
        assert "model-index" not in data and "eval_results" not in data
        assert "Not evaluated yet" in card.text
        assert "BLEU signature" not in card.text
        assert metadata_load_str(str(card)).get("model-index") is None


def metadata_load_str(content):
    return yaml.safe_load(content.split("---\n")[1]) or {}


def test_from_scratch_local_dataset_and_baseline():
    card = render_model_card(
        "translation",
        **{
            **TRANSLATION,
            "base_model": None,
            "dataset": {
                "id": "/data/train.jsonl",
                "split": "validation",
                "source_lang": "fr",
                "target_lang": "en",
            },
            "loss": {"loss": "ce", "bonus_weight": 0.0, "label_smoothing_factor": 0.1},
            "loss_label": "cross-entropy",
            "is_method": False,
        },
    )
    data = card.data.to_dict()
    assert "base_model" not in data and "datasets" not in data
    assert "encouraging-loss" not in data["tags"]
    assert "trained from scratch" in card.text and "`ce` baseline" in card.text
    assert _results(card)["dataset"]["type"] == "/data/train.jsonl"


def test_classification_card():
    card = render_model_card("classification", **CLASSIFICATION)
    text = card.text
    for key, value in CLASSIFICATION["loss"].items():
        shown = {True: "True", 0.0: "0", 4.0: "4", -1.0: "-1"}.get(value, str(value))
        assert f"| `{key}` | {shown} |" in text
    assert "Labels (3): `admiration`, `amusement`, `anger`." in text
    assert "**0.35**, tuned for micro-F1 on the `validation` split" in text
    for needle in ("| F1 (micro) | 0.6123 |", "| mAP | 0.5012 |", "| P@3 | 0.4000 |", "| nDCG@5 | 0.7200 |"):
        assert needle in text
    assert "| Hamming loss | 0.0312 |" in text
    assert ">= 0.35]" in text
    assert "Asymmetric Polynomial Loss for Multi-Label Classification" in text
    assert (
        "Huang, Yusheng and Qi, Jiexing and Wang, Xinbing and Lin, Zhouhan" in text and "2304.05361" in text
    )
    assert f"scikit-learn {metadata.version('scikit-learn')}" in text

    data = card.data.to_dict()
    assert {"hf_losses", "asymmetric-polynomial-loss"} <= set(data["tags"])
    result = _results(card)
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"]["type"] == "google-research-datasets/go_emotions"
    assert result["dataset"]["config"] == "simplified" and result["dataset"]["split"] == "test"
    f1 = [m for m in result["metrics"] if m["type"] == "f1"]
    assert [(m["args"]["average"], m["value"]) for m in f1] == [("micro", 0.6123), ("macro", 0.4567)]
    values = {m["name"]: m["value"] for m in result["metrics"]}
    assert values["P@1"] == 0.75 and values["nDCG@3"] == 0.7 and values["mAP"] == 0.5012
    assert values["Hamming loss"] == 0.0312


def test_classification_without_metrics_or_threshold():
    card = render_model_card(
        "classification", **{**CLASSIFICATION, "metrics": {}, "extra": None, "dataset": {"id": "local/data"}}
    )
    assert "model-index" not in card.data.to_dict()
    assert "Not evaluated yet" in card.text
    assert "Threshold: not recorded" in card.text and "Labels: not recorded." in card.text


def test_template_dir_override_and_errors(tmp_path):
    shutil.copy(TEMPLATES / "translation.md", tmp_path / "translation.md")
    with (tmp_path / "translation.md").open("a", encoding="utf-8") as handle:
        handle.write("\nCUSTOM FOOTER {{ model_name }}\n")
    card = render_model_card("translation", **TRANSLATION, template_dir=tmp_path)
    assert "CUSTOM FOOTER opus-mt-de-en-cel" in card.text
    with pytest.raises(FileNotFoundError):
        render_model_card("classification", **CLASSIFICATION, template_dir=tmp_path)
    with pytest.raises(ValueError):
        render_model_card("summarization", **TRANSLATION)


def test_unknown_dataset_is_named_not_an_error():
    card = render_model_card("translation", **{**TRANSLATION, "dataset": None})
    assert "datasets" not in card.data.to_dict()
    assert "`unknown`" in card.text


def test_translation_card_names_the_bonus_shape_and_schedule(tmp_path):
    """The card's loss table comes from loss_settings(): shape and schedule included."""
    from hf_losses import EncouragingSeq2SeqConfig

    args = EncouragingSeq2SeqConfig(
        output_dir=str(tmp_path),
        loss="el",
        bonus="power",
        bonus_power=2.0,
        bonus_schedule="linear",
        bonus_warmup_ratio=0.1,
    )
    card = render_model_card("translation", **{**TRANSLATION, "loss": args.loss_settings()})
    for needle in (
        "`bonus` | power",
        "`bonus_power` | 2",
        "`bonus_schedule` | linear",
        "`bonus_warmup_ratio` | 0.1",
    ):
        assert needle in card.text
    assert card.text.index("`bonus` | power") < card.text.index("`bonus_weight`")
