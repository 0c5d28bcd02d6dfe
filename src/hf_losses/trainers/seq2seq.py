"""EncouragingSeq2SeqConfig + EncouragingSeq2SeqTrainer: token-level EL/CEL (or CE) for sequence-to-sequence models."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

from .averaging import CheckpointAveragingArguments
from .encouraging_config import EncouragingLossArguments
from .encouraging_trainer import EncouragingTrainerMixin
from .stopping import EarlyStoppingArguments


@dataclass
class EncouragingSeq2SeqConfig(
    EncouragingLossArguments, CheckpointAveragingArguments, EarlyStoppingArguments, Seq2SeqTrainingArguments
):
    """Seq2SeqTrainingArguments plus the encouraging-loss settings (``EncouragingLossArguments``: the loss,
    its knobs, the bonus schedule and ``fused_lm_head``), exposed as CLI flags by HfArgumentParser."""


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs from labels: ``[start, y_1, ..., y_{T-1}]`` with ignored (-100) positions as padding."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[..., 1:] = labels[..., :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


class EncouragingSeq2SeqTrainer(EncouragingTrainerMixin, Seq2SeqTrainer):
    """Seq2SeqTrainer whose loss is the fused encouraging loss, normalised exactly by the global token count.

    Logs ``nll_loss`` (plain per-token -log p_y), ``bonus`` (mean b(p_y)) and ``bonus_weight`` (the weight
    of the last step, which ``bonus_schedule`` ramps up) beside ``loss``: the EL value can be negative and is
    not comparable to cross-entropy. In evaluation ``eval_loss``, ``eval_nll_loss``
    and ``eval_bonus`` are exact per-token means over the evaluation set; with ``predict_with_generate`` they
    are still teacher-forced, from one forward pass without labels (the model computes no loss of its own).

    Example::

        from transformers import DataCollatorForSeq2Seq
        from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer

        args = EncouragingSeq2SeqConfig(output_dir="out", loss="cel", log_end=0.5, label_smoothing_factor=0.1)
        trainer = EncouragingSeq2SeqTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=valid, processing_class=tokenizer,
            data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        )
        trainer.train()
    """

    args: EncouragingSeq2SeqConfig
    config_class = EncouragingSeq2SeqConfig
    card_task = "translation"

    def check_model(self) -> None:
        """A decoder-only model has no decoder inputs to build: refuse it now, not at the first step."""
        config = getattr(self.model, "config", None)
        if config is not None and not getattr(config, "is_encoder_decoder", False):
            raise ValueError(
                f"{type(self).__name__} trains encoder-decoder models; {type(self.model).__name__} is decoder-only: "
                "use hf_losses.EncouragingCausalLMTrainer (or transformers' Trainer with compute_loss_func="
                "hf_losses.trainer_loss_func(EncouragingLoss(...), shift_labels=True))"
            )

    def model_inputs(self, model, inputs, labels):
        """Decoder inputs from the labels when the collator did not add them (shifted with the model's config)."""
        if "decoder_input_ids" not in inputs and "decoder_inputs_embeds" not in inputs:
            inner = self.accelerator.unwrap_model(model)
            if hasattr(inner, "prepare_decoder_input_ids_from_labels"):
                inputs["decoder_input_ids"] = inner.prepare_decoder_input_ids_from_labels(labels=labels)
            else:
                config = inner.config
                start = config.decoder_start_token_id
                if start is None:
                    raise ValueError(
                        f"{type(inner).__name__} has no decoder_start_token_id in its config: set it, or let "
                        "the data collator build decoder_input_ids"
                    )
                inputs["decoder_input_ids"] = shift_tokens_right(labels, config.pad_token_id, start)
        return inputs

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs,
    ):
        """With generation: the teacher-forced loss through ``compute_loss`` (the one loss entry point), then
        generation from the source alone (no second forward pass with labels)."""
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        loss = None
        if labels is not None:
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs).detach()
        source = {
            k: v
            for k, v in inputs.items()
            if k not in ("labels", "decoder_input_ids", "decoder_attention_mask")
        }
        _, generated, _ = super().prediction_step(model, source, False, ignore_keys, **gen_kwargs)
        return loss, generated, labels

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Also drop, from generated predictions, the examples accelerate repeats to even out the last batch.

        ``Seq2SeqTrainer.evaluate``/``predict`` gather generations with plain ``gather`` (so that
        ``num_return_sequences > 1`` keeps every sequence), which keeps those repeats: with several processes
        BLEU, chrF and the prediction files would count some examples twice. With one sequence per example
        ``gather_for_metrics`` is exact, so use it then.
        """
        gen_kwargs = getattr(self, "_gen_kwargs", None) or {}
        config = gen_kwargs.get("generation_config") or getattr(self.model, "generation_config", None)
        sequences = (
            gen_kwargs.get("num_return_sequences") or getattr(config, "num_return_sequences", None) or 1
        )
        if sequences == 1:
            self.gather_function = functools.partial(
                self.accelerator.gather_for_metrics, use_gather_object=self.args.eval_use_gather_object
            )
        return super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
