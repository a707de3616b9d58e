"""Schedules as pure functions of the optimiser step (so a resumed run is exact): learning rate, gate.

Learning-rate multiplier (:func:`lr_factor`; multiply by the peak rate), ``W`` warm-up steps of ``T``::

    f(s) = (s + 1) / W                                     s < W     (linear warm-up, 1 at s = W - 1)
    f(s) = m + (1 - m) (1 + cos(pi t)) / 2,  t = (s - W) / max(1, T - W) clipped to 1     (cosine to m)
    f(s) = 1                                               after warm-up, with decay "constant"

Gate annealing of the converter (:class:`BetaSchedule`), ``A = max(1, round(anneal_frac T))``::

    t = min(1, (s + 1) / A),   beta = 1 - t  ("linear")  or  (1 + cos(pi t)) / 2  ("cosine");  0 from s = A - 1

so ``beta`` goes from 1 (SiLU) to 0 (bilinear) over the first ``anneal_frac`` of the steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BETA_SCHEDULES", "BetaSchedule", "LR_DECAYS", "LRSchedule", "lr_factor", "resolved_warmup"]

LR_DECAYS = ("cosine", "constant")
BETA_SCHEDULES = ("linear", "cosine")


def resolved_warmup(warmup: "int | None", total: int) -> int:
    """``warmup`` itself, or (None) 5% of the ``total`` steps: at least 1, at most 100."""
    return warmup if warmup is not None else min(100, max(1, total // 20))


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0, decay: str = "cosine") -> float:
    """The learning-rate multiplier of ``step`` (module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class LRSchedule:
    """:func:`lr_factor` for one run."""

    total_steps: int
    warmup: int = 0
    decay: str = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.decay not in LR_DECAYS:
            raise ValueError(f"unknown learning-rate decay {self.decay!r}; use one of {', '.join(LR_DECAYS)}")

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup, self.min_lr_ratio, self.decay)


@dataclass(frozen=True)
class BetaSchedule:
    """``beta`` from 1 to 0 over the first ``anneal_frac * total_steps`` steps (module docstring)."""

    total_steps: int
    anneal_frac: float = 0.3
    kind: str = "linear"

    def __post_init__(self) -> None:
        if not 0.0 < self.anneal_frac <= 1.0:
            raise ValueError(f"anneal_frac={self.anneal_frac} must be in (0, 1]: beta has to reach 0 before the "
                             "end of training for the final swap to be exact")
        if self.kind not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta schedule {self.kind!r}; use one of {', '.join(BETA_SCHEDULES)}")

    @property
    def anneal_steps(self) -> int:
        return max(1, round(self.anneal_frac * self.total_steps))

    def __call__(self, step: int) -> float:
        t = min(1.0, (step + 1) / self.anneal_steps)
        if t >= 1.0:
            return 0.0
        return 1.0 - t if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
