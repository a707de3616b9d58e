"""SwiGLU -> bilinear conversion by finetuning with an annealed gate (see docs/convert.md).

``run_convert(ConvertConfig(model=..., data=..., out=...))`` runs (or resumes) one conversion;
``swap_to_annealed`` / ``set_beta`` / ``finalize_bilinear`` / ``convert_to_bilinear`` are the
building blocks; ``AnnealedGateMLP`` is the block with gate ``(2 - beta) g sigmoid(beta g)``.
"""

from bilinear_lens.convert.annealed_mlp import AnnealedGateMLP, annealed_gate
from bilinear_lens.convert.finetune import ConvertConfig, run_convert
from bilinear_lens.convert.swap import (check_convertible, convert_to_bilinear, finalize_bilinear,
                                        freeze_biases, set_beta, swap_to_annealed)

__all__ = ["AnnealedGateMLP", "ConvertConfig", "annealed_gate", "check_convertible", "convert_to_bilinear",
           "finalize_bilinear", "freeze_biases", "run_convert", "set_beta", "swap_to_annealed"]
