"""EncouragingCausalLMConfig + EncouragingCausalLMTrainer: token-level EL/CEL for decoder-only language models."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from .averaging import CheckpointAveragingArguments
from .encouraging_config import EncouragingLossArguments
from .encouraging_trainer import EncouragingTrainerMixin
from .stopping import EarlyStoppingArguments


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts: ``labels[..., t + 1]``, and -100 at the last position."""
    return torch.nn.functional.pad(labels[..., 1:], (0, 1), value=-100)


def prompts_of(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of each example's prompt, left-padded for generation.

    The prompt is an example's real tokens before its first scored label (-100 marks the prompt and the padding,
    on either side); an example without a scored label is all prompt.
    """
    real = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    scored = labels.ne(-100)
    positions = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    first_scored = torch.where(scored, positions, labels.shape[1]).amin(dim=1, keepdim=True)
    prompt = real & (positions < first_scored)
    order = torch.argsort(prompt.int(), dim=1, stable=True)  # padding first, the prompt last and in order
    width = int(prompt.sum(dim=1).max())
    mask = prompt.gather(1, order)[:, labels.shape[1] - width :]
    ids = input_ids.gather(1, order)[:, labels.shape[1] - width :].masked_fill(~mask, pad_token_id)
    return ids, mask.long()


@dataclass
class EncouragingCausalLMConfig(
    EncouragingLossArguments, CheckpointAveragingArguments, EarlyStoppingArguments, TrainingArguments
):
    """TrainingArguments plus the encouraging-loss settings (``EncouragingLossArguments``: the loss, its knobs,
    the bonus schedule and ``fused_lm_head``) and, as in ``Seq2SeqTrainingArguments``, generation in evaluation;
    exposed as CLI flags by HfArgumentParser."""

    predict_with_generate: bool = field(
        default=False,
        metadata={
            "help": "Evaluation also generates a completion of each prompt (the tokens before the first scored "
            "label) and passes the new tokens to compute_metrics."
        },
    )
    generation_max_length: int | None = field(
        default=None,
        metadata={"help": "Most tokens generated after the prompt (default: the model's generation_config)."},
    )
    generation_num_beams: int | None = field(
        default=None, metadata={"help": "Beams of that generation (default: the model's generation_config)."}
    )


class EncouragingCausalLMTrainer(EncouragingTrainerMixin, Trainer):
    """Trainer for decoder-only LMs whose loss is EL/CEL of the next token, normalised exactly by the global
    token count (over accumulation steps and processes).

    Position t is scored against ``labels[t + 1]``, as transformers' own causal-LM loss does; labels of -100
    (the prompt, padding) are not scored (docs/decoder-only.md). With ``fused_lm_head`` the model runs without its output projection
    in training and the loss applies it in chunks: the ``[tokens, V]`` logits are never formed. Logs
    ``nll_loss``, ``bonus`` and ``bonus_weight`` beside ``loss``; evaluation adds ``ece`` and ``mean_p_y``.

    With ``predict_with_generate`` evaluation also generates from each prompt alone and returns the new
    tokens as predictions (the labels stay the targets), after one teacher-forced pass for the loss.

    Example::

        from transformers import DataCollatorForSeq2Seq
        from hf_losses import EncouragingCausalLMConfig, EncouragingCausalLMTrainer

        args = EncouragingCausalLMConfig(output_dir="out", loss="cel", fused_lm_head=True, max_steps=2)
        trainer = EncouragingCausalLMTrainer(
            model=model, args=args, train_dataset=train,  # input_ids, and labels with -100 on the prompt
            data_collator=DataCollatorForSeq2Seq(tokenizer),  # pads the labels with -100
        )
        trainer.train()
    """

    args: EncouragingCausalLMConfig
    config_class = EncouragingCausalLMConfig
    card_task = "translation"

    def check_model(self) -> None:
        """An encoder-decoder model needs decoder inputs: refuse it now, naming the trainer that builds them."""
        config = getattr(self.model, "config", None)
        if config is not None and getattr(config, "is_encoder_decoder", False):
            raise ValueError(
                f"{type(self).__name__} trains decoder-only models; {type(self.model).__name__} is an "
                "encoder-decoder model: use hf_losses.EncouragingSeq2SeqTrainer"
            )

    def scored_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return next_token_labels(labels)

    def card_extra(self) -> dict[str, Any]:
        return {"decoder_only": True}  # the card shows prompting and decoding the new tokens

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ):
        """With ``predict_with_generate``: the teacher-forced loss through ``compute_loss``, then generation from
        the prompts alone; the predictions are the generated tokens after the prompt."""
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        labels = inputs["labels"]
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs).detach()
        generator = self.accelerator.unwrap_model(model)
        config = self.generation_config(generator)
        prompt_ids, prompt_mask = prompts_of(
            inputs["input_ids"], inputs.get("attention_mask"), labels, config.pad_token_id
        )
        with torch.no_grad():
            generated = generator.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config
            )
        return loss, generated[:, prompt_ids.shape[1] :], labels

    def generation_config(self, model) -> Any:
        """The model's generation settings with ``generation_max_length`` (as new tokens) and
        ``generation_num_beams``; padding falls back to the eos token."""
        config = copy.deepcopy(model.generation_config)
        if self.args.generation_max_length is not None:
            config.max_new_tokens = self.args.generation_max_length
            config.max_length = None
        if self.args.generation_num_beams is not None:
            config.num_beams = self.args.generation_num_beams
        if config.pad_token_id is None:
            tokenizer = self.processing_class
            pad = getattr(tokenizer, "pad_token_id", None)
            eos = (
                config.eos_token_id
                if config.eos_token_id is not None
                else getattr(tokenizer, "eos_token_id", None)
            )
            config.pad_token_id = pad if pad is not None else (eos[0] if isinstance(eos, list) else eos)
        if config.pad_token_id is None:
            raise ValueError(
                "predict_with_generate needs a pad or eos token id: set model.generation_config.pad_token_id"
            )
        return config
