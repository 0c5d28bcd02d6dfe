"""One plain-SGD optimiser step of each trainer, for `accelerate launch` with several CPU processes.

    CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes 2 tests/helpers/ddp_step.py OUT.pt [--batch_size 4]

Every process trains on its shard of the same 8 tiny examples, then evaluates on 5 examples; the main process
saves the updated parameters, the evaluation metrics and the world size it saw to OUT.pt, for
tests/test_distributed.py to compare with the exact full-batch step and with a single-process run of `run()`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.helpers.tiny`

import torch  # noqa: E402
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding  # noqa: E402

from hf_losses import EncouragingSeq2SeqConfig, EncouragingSeq2SeqTrainer  # noqa: E402
from tests.helpers.tiny import (  # noqa: E402
    multilabel_dataset,
    one_step_args,
    prompt_completion_dataset,
    seq2seq_dataset,
    tiny_bert,
    tiny_causal_lm,
    tiny_marian,
    tiny_tokenizer,
)

SEQ2SEQ_LOSS = dict(loss="cel", log_end=0.5, bonus_weight=1.0, label_smoothing_factor=0.1)
# 5 evaluation examples in batches of 2 per process: the last batch of the 2-process run holds repeats
EVAL_EXAMPLES, EVAL_BATCH = 5, 2


def seq2seq_step(
    output_dir: str, batch_size: int, fused: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, float], int]:
    """Parameters after one step, metrics of a teacher-forced evaluation after it, and the process count."""
    model, tokenizer = tiny_marian(), tiny_tokenizer()
    args = EncouragingSeq2SeqConfig(
        **one_step_args(
            output_dir, per_device_train_batch_size=batch_size, per_device_eval_batch_size=EVAL_BATCH
        ),
        **SEQ2SEQ_LOSS,
        fused_lm_head=fused,
    )
    trainer = EncouragingSeq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=seq2seq_dataset(8),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
    )
    trainer.train()
    metrics = trainer.evaluate(eval_dataset=seq2seq_dataset(EVAL_EXAMPLES, seed=1))
    return parameters(trainer), metrics, trainer.accelerator.num_processes


def multilabel_step(
    output_dir: str, batch_size: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]] | None:
    """As `seq2seq_step` for MultiLabelTrainer (APL); None if the package has no multi-label trainer."""
    try:
        from hf_losses import MultiLabelConfig, MultiLabelTrainer
    except ImportError:
        return None
    args = MultiLabelConfig(
        **one_step_args(
            output_dir, per_device_train_batch_size=batch_size, per_device_eval_batch_size=EVAL_BATCH
        ),
        loss="apl",
    )
    trainer = MultiLabelTrainer(
        model=tiny_bert(),
        args=args,
        train_dataset=multilabel_dataset(8),
        data_collator=DataCollatorWithPadding(tiny_tokenizer()),
    )
    trainer.train()
    metrics = trainer.evaluate(eval_dataset=multilabel_dataset(EVAL_EXAMPLES, seed=1))
    return parameters(trainer), metrics


def causal_lm_step(output_dir: str, batch_size: int) -> dict[str, torch.Tensor]:
    """Parameters after one step of EncouragingCausalLMTrainer with the fused head (CEL, prompts masked)."""
    from hf_losses import EncouragingCausalLMConfig, EncouragingCausalLMTrainer

    args = EncouragingCausalLMConfig(
        **one_step_args(output_dir, per_device_train_batch_size=batch_size),
        **SEQ2SEQ_LOSS,
        fused_lm_head=True,
    )
    trainer = EncouragingCausalLMTrainer(
        model=tiny_causal_lm("llama"),
        args=args,
        train_dataset=prompt_completion_dataset(8),
        data_collator=DataCollatorForSeq2Seq(tiny_tokenizer()),
    )
    trainer.train()
    return parameters(trainer)


def sft_step(output_dir: str, batch_size: int) -> dict[str, torch.Tensor] | None:
    """The same step through TRL's SFTTrainer (EncouragingSFTTrainer) on pre-tokenised data; None without TRL."""
    try:
        from hf_losses.integrations.trl import EncouragingSFTConfig, EncouragingSFTTrainer
    except ImportError:
        return None
    args = EncouragingSFTConfig(
        **one_step_args(output_dir, per_device_train_batch_size=batch_size),
        **SEQ2SEQ_LOSS,
        fused_lm_head=True,
        bf16=False,
    )
    trainer = EncouragingSFTTrainer(
        model=tiny_causal_lm("llama"),
        args=args,
        train_dataset=prompt_completion_dataset(8),
        processing_class=tiny_tokenizer(),
    )
    trainer.train()
    return parameters(trainer)


def parameters(trainer) -> dict[str, torch.Tensor]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {name: value.detach().cpu().clone() for name, value in model.named_parameters()}


def run(output_dir: str, batch_size: int) -> dict:
    """Every trainer: {"world_size", "seq2seq", "seq2seq_eval", "multilabel", "multilabel_eval",
    "seq2seq_fused", "causal_lm", "sft"}."""
    seq2seq, seq2seq_eval, world_size = seq2seq_step(str(Path(output_dir) / "seq2seq"), batch_size)
    multilabel = multilabel_step(str(Path(output_dir) / "multilabel"), batch_size)
    seq2seq_fused = seq2seq_step(str(Path(output_dir) / "seq2seq_fused"), batch_size, fused=True)[0]
    return {
        "seq2seq_fused": seq2seq_fused,
        "causal_lm": causal_lm_step(str(Path(output_dir) / "causal_lm"), batch_size),
        "sft": sft_step(str(Path(output_dir) / "sft"), batch_size),
        "world_size": world_size,
        "seq2seq": seq2seq,
        "seq2seq_eval": seq2seq_eval,
        "multilabel": multilabel[0] if multilabel else None,
        "multilabel_eval": multilabel[1] if multilabel else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output", help="where the main process saves the parameters after the step")
    parser.add_argument("--batch_size", type=int, default=4, help="per-device train batch size")
    cli = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(tmp, cli.batch_size)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        torch.save(result, cli.output)


if __name__ == "__main__":
    main()
