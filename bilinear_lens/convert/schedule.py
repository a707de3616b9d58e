"""Schedules of the converter, as pure functions of the optimiser step (so resuming is exact).

* ``beta_at(step)``: the gate parameter, ``beta = 1 - t`` with ``t = min(1, (step + 1) / A)``, ``A = round(anneal_frac * total)``
  (linear from 1 to 0 over the first ``anneal_frac`` of the steps, the last of them already at 0);
  ``"cosine"`` uses ``beta = (1 + cos(pi * t)) / 2`` instead.
  Baseline runs keep ``beta = 1``.
* ``lr_factor(step)``: linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio``
  (or constant with ``decay="constant"``); multiply by the peak learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BetaSchedule:
    """``beta`` from 1 to 0 over the first ``anneal_frac * total_steps`` steps."""

    total_steps: int
    anneal_frac: float = 0.3
    kind: str = "linear"  # "linear" | "cosine"

    def __post_init__(self) -> None:
        if not 0.0 < self.anneal_frac <= 1.0:
            raise ValueError(f"anneal_frac={self.anneal_frac} must be in (0, 1]: beta has to reach 0 "
                             "before the end of training for the final swap to be exact")
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"unknown beta schedule {self.kind!r}; use 'linear' or 'cosine'")

    @property
    def anneal_steps(self) -> int:
        return max(1, round(self.anneal_frac * self.total_steps))

    def __call__(self, step: int) -> float:
        t = min(1.0, (step + 1) / self.anneal_steps)
        if t >= 1.0:
            return 0.0
        return 1.0 - t if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of the peak learning rate: warm-up, then cosine (or constant)."""

    total_steps: int
    warmup: int = 20
    decay: str = "cosine"  # "cosine" | "constant"
    min_lr_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.decay == "constant":
            return 1.0
        t = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
