"""hf_losses: Encouraging Loss (EL/CEL) and Asymmetric Polynomial Loss (APL) for the Hugging Face stack."""

from .losses import (
    AsymmetricPolynomialLoss,
    EncouragingLoss,
    EncouragingLossOutput,
    LinearEncouragingLoss,
    asymmetric_polynomial_loss,
    encouraging_loss,
    linear_encouraging_loss,
)
from .trainers import (
    EncouragingCausalLMConfig,
    EncouragingCausalLMTrainer,
    EncouragingSeq2SeqConfig,
    EncouragingSeq2SeqTrainer,
    MultiLabelConfig,
    MultiLabelTrainer,
    trainer_loss_func,
)

__version__ = "0.1.0"

__all__ = [
    "AsymmetricPolynomialLoss",
    "EncouragingCausalLMConfig",
    "EncouragingCausalLMTrainer",
    "EncouragingLoss",
    "EncouragingLossOutput",
    "EncouragingSeq2SeqConfig",
    "EncouragingSeq2SeqTrainer",
    "LinearEncouragingLoss",
    "MultiLabelConfig",
    "MultiLabelTrainer",
    "__version__",
    "asymmetric_polynomial_loss",
    "encouraging_loss",
    "linear_encouraging_loss",
    "trainer_loss_func",
]
