"""The shared loop's settings, nested in every language-model command's config (``train-lm``, ``convert``).

* :class:`OptimConfig`: AdamW and its learning-rate schedule (:mod:`bilinear_lens.training.schedule`);
* :class:`LoopConfig`: how the loop steps, checkpoints and runs on processes (not what it trains).

Light (no torch): command lines are built from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from bilinear_lens.config import Config, option
from bilinear_lens.runs.errors import RunError
from bilinear_lens.training.schedule import LR_DECAYS

__all__ = ["LoopConfig", "OptimConfig"]


@dataclass
class OptimConfig(Config):
    """AdamW and its learning-rate schedule."""

    lr: float = option(1e-3, "peak learning rate", minimum=0, inclusive=(False, True))
    weight_decay: float = option(0.0, "AdamW weight decay on matrices", minimum=0)
    betas: Tuple[float, float] = option((0.9, 0.95), "AdamW betas", cli=False)
    grad_clip: float = option(1.0, "clip the global gradient norm (0: no clipping)", minimum=0)
    warmup: Optional[int] = option(None, "linear warm-up steps (default: 5% of the steps, at most 100)", minimum=0)
    lr_decay: str = option("cosine", "after warm-up", choices=LR_DECAYS)
    min_lr_ratio: float = option(0.1, "final learning rate / peak", minimum=0, maximum=1)

    def _check(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise RunError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")


@dataclass
class LoopConfig(Config):
    """How the loop steps, checkpoints and runs on processes (not what it trains)."""

    batch_size: int = option(16, "sequences per micro-batch and process", minimum=1)
    grad_accum: int = option(1, "micro-batches per optimiser step", minimum=1)
    eval_every: int = option(0, "steps between validations (0: 4 per run)", minimum=0, identity=False)
    checkpoint_every: int = option(50, "steps between checkpoints", minimum=1, identity=False)
    bf16: bool = option(False, "bf16 autocast (where the device supports it)")
    grad_checkpointing: bool = option(False, "recompute block activations in the backward pass")
    fsdp: bool = option(False, "shard weights, gradients and optimiser state over the launched processes "
                        "(torch FSDP2, one unit per block)", identity=False)
    stop_after_steps: Optional[int] = option(None, "stop with a checkpoint after this step (tests)", minimum=1,
                                             cli=False, identity=False)
    fail_at_step: Optional[int] = option(None, "raise in the middle of this step (tests)", minimum=0, cli=False,
                                         identity=False)
