"""EncouragingCausalLMConfig + EncouragingCausalLMTrainer: token-level EL/CEL for decoder-only language models."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Trainer, TrainingArguments

from .averaging import CheckpointAveragingArguments
from .encouraging_config import EncouragingLossArguments
from .encouraging_trainer import EncouragingTrainerMixin


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts: ``labels[..., t + 1]``, and -100 at the last position."""
    return torch.nn.functional.pad(labels[..., 1:], (0, 1), value=-100)


@dataclass
class EncouragingCausalLMConfig(EncouragingLossArguments, CheckpointAveragingArguments, TrainingArguments):
    """TrainingArguments plus the encouraging-loss settings (``EncouragingLossArguments``: the loss, its knobs,
    the bonus schedule and ``fused_lm_head``), exposed as CLI flags by HfArgumentParser."""


class EncouragingCausalLMTrainer(EncouragingTrainerMixin, Trainer):
    """Trainer for decoder-only LMs whose loss is EL/CEL of the next token, normalised exactly by the global
    token count (over accumulation steps and processes).

    Position t is scored against ``labels[t + 1]``, as transformers' own causal-LM loss does; labels of -100
    (the prompt, padding) are not scored (docs/decoder-only.md). With ``fused_lm_head`` the model runs without its output projection
    in training and the loss applies it in chunks: the ``[tokens, V]`` logits are never formed. Logs
    ``nll_loss``, ``bonus`` and ``bonus_weight`` beside ``loss``; evaluation adds ``ece`` and ``mean_p_y``.

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
