"""BLEU/chrF metrics and the Seq2SeqTrainer compute_metrics callable."""

import numpy as np
import pytest
import sacrebleu
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import EvalPrediction, PreTrainedTokenizerFast

from hf_losses.metrics import Seq2SeqMetrics, translation_metrics

# Hypothesis vs reference, 6 words each (brevity penalty 1). Clipped n-gram precisions:
#   1-grams: the, cat, sat, on, mat match (second "the" does not) -> 5/6
#   2-grams: "the cat", "cat sat", "sat on" of 5                    -> 3/5
#   3-grams: "the cat sat", "cat sat on" of 4                        -> 2/4
#   4-grams: "the cat sat on" of 3                                   -> 1/3
# BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = 100 * (1/12) ** 0.25 = 53.7285
HYP = "the cat sat on the mat"
REF = "the cat sat on a mat"
HAND_BLEU = 100 * (1 / 12) ** 0.25


def test_bleu_hand_computed():
    out = translation_metrics([HYP], [REF])
    assert out["bleu"] == pytest.approx(HAND_BLEU, abs=1e-9)
    assert 0 < out["chrf"] < 100


def test_identical_and_disjoint():
    sents = ["a quick brown fox jumps", "over the lazy dog today"]
    out = translation_metrics(sents, sents)
    assert out["bleu"] == pytest.approx(100.0) and out["chrf"] == pytest.approx(100.0)
    out = translation_metrics(["xxxx yyyy"], ["abab cdcd"])
    assert out["bleu"] == 0.0 and out["chrf"] == 0.0


def test_whitespace_is_stripped():
    assert translation_metrics([f"  {HYP}\n"], [f"\t{REF} "])["bleu"] == pytest.approx(HAND_BLEU)


def test_signatures():
    out = translation_metrics([HYP], [REF])
    for key in ("bleu_signature", "chrf_signature"):
        assert "nrefs:1" in out[key] and f"version:{sacrebleu.__version__}" in out[key]
    assert "tok:13a" in out["bleu_signature"]
    assert "nc:6" in out["chrf_signature"]


def test_errors():
    with pytest.raises(ValueError):
        translation_metrics([], [])
    with pytest.raises(ValueError):
        translation_metrics(["a"], ["a", "b"])


VOCAB = {"<pad>": 0, "</s>": 1, "<unk>": 2, "the": 3, "cat": 4, "sat": 5, "on": 6, "a": 7, "mat": 8}


@pytest.fixture
def tokenizer():
    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def test_seq2seq_metrics_decodes_and_counts(tokenizer):
    # Row 0: decoder start (pad) + "the cat sat on the mat" + eos, gathered padding -100.
    # Row 1: decoder start + "the cat" + eos + pad.
    preds = np.array([[0, 3, 4, 5, 6, 3, 8, 1, -100], [0, 3, 4, 1, 0, 0, 0, 0, -100]])
    labels = np.array([[3, 4, 5, 6, 7, 8, 1, -100], [3, 4, 1, -100, -100, -100, -100, -100]])
    metric = Seq2SeqMetrics(tokenizer)
    out = metric(EvalPrediction(predictions=preds, label_ids=labels))
    assert metric.last_predictions == [HYP, "the cat"]
    assert metric.last_references == [REF, "the cat"]
    # gen_len counts non-pad tokens: 7 (6 words + eos) and 3 (2 words + eos) -> 5.
    assert out["gen_len"] == pytest.approx(5.0)
    expected = translation_metrics([HYP, "the cat"], [REF, "the cat"])
    assert out == {"bleu": expected["bleu"], "chrf": expected["chrf"], "gen_len": pytest.approx(5.0)}
    assert all(isinstance(v, float) for v in out.values())
    assert metric.signatures == {k: expected[k] for k in ("bleu_signature", "chrf_signature")}


def test_gen_len_stops_at_the_first_eos_as_beam_search_pads_with_eos(tokenizer):
    """Beam search fills a finished sequence with eos (measured with transformers 5 on a Marian model):
    [start, the, cat, eos, eos, eos] is 3 tokens long, not 5."""
    preds = np.array([[0, 3, 4, 1, 1, 1, 1], [0, 3, 4, 5, 6, 8, 1], [0, 3, 1, 0, 0, 0, -100]])
    labels = np.array([[3, 4, 1], [3, 4, 1], [3, 4, 1]])
    metric = Seq2SeqMetrics(tokenizer)
    assert metric.generated_lengths(metric._ids(preds, "predictions")).tolist() == [3, 6, 2]
    assert metric(EvalPrediction(predictions=preds, label_ids=labels))["gen_len"] == pytest.approx(11 / 3)
    assert metric.last_predictions == ["the cat", "the cat sat on mat", "the"]


def test_seq2seq_metrics_tuple_and_logits(tokenizer):
    preds = np.array([[0, 3, 4, 5, 6, 3, 8, 1]])
    labels = np.array([[3, 4, 5, 6, 7, 8, 1, -100]])
    metric = Seq2SeqMetrics(tokenizer)
    out = metric(EvalPrediction(predictions=(preds, np.zeros((1, 2))), label_ids=labels))
    assert out["bleu"] == pytest.approx(HAND_BLEU)
    with pytest.raises(ValueError, match="predict_with_generate"):
        metric(EvalPrediction(predictions=np.zeros((1, 8, 9)), label_ids=labels))


def test_with_seq2seq_trainer(tokenizer, tmp_path):
    """End to end: a tiny random T5 evaluated by Seq2SeqTrainer(predict_with_generate=True)."""
    torch = pytest.importorskip("torch")
    from datasets import Dataset
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(VOCAB),
        d_model=8,
        d_kv=4,
        d_ff=16,
        num_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(config)
    texts = [("the cat sat", "the cat sat on a mat"), ("a mat", "the cat"), ("on the mat", "a cat sat")]
    rows = [
        {"input_ids": tokenizer(s)["input_ids"] + [1], "labels": tokenizer(t)["input_ids"] + [1]}
        for s, t in texts
    ]
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=2,
        predict_with_generate=True,
        generation_max_length=6,
        report_to=[],
        use_cpu=True,
    )
    metric = Seq2SeqMetrics(tokenizer)
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        eval_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        compute_metrics=metric,
    )
    out = trainer.evaluate()
    assert {"eval_bleu", "eval_chrf", "eval_gen_len"} <= set(out)
    assert len(metric.last_predictions) == 3
    assert metric.last_references == ["the cat sat on a mat", "the cat", "a cat sat"]
    assert 0 < out["eval_gen_len"] <= 6
    assert "nrefs:1" in metric.signatures["bleu_signature"]
