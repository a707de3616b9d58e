"""The settings of one conversion run (``run.json``'s identity, option checks, the command-line flags).

``ConvertConfig`` nests the shared loop's settings (:class:`~bilinear_lens.training.OptimConfig`,
:class:`~bilinear_lens.training.LoopConfig`), the gate annealing (:class:`AnnealConfig`) and the run
options; every leaf field is a ``convert`` flag of the same name. The defaults are the converter's best
measured recipe on stories260k (docs/convert.md, "Which settings matter").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bilinear_lens.config import Config, RunOptions, nested, option
from bilinear_lens.training.config import LoopConfig, OptimConfig
from bilinear_lens.training.schedule import BETA_SCHEDULES

__all__ = ["AnnealConfig", "ConvertConfig", "OWNED"]

OWNED = ("run.json", "metrics.json", "checkpoint", "model")
"""The entries a conversion run writes (what ``--overwrite`` replaces)."""


@dataclass
class AnnealConfig(Config):
    """How the gate ``phi_beta(g) = (2 - beta) g sigmoid(beta g)`` goes from SiLU (1) to bilinear (0)."""

    anneal_frac: float = option(0.1, "fraction of the steps over which beta goes from 1 to 0", minimum=0,
                                maximum=1, inclusive=(False, True))
    beta_schedule: str = option("linear", "shape of beta over the annealing steps", choices=BETA_SCHEDULES)


@dataclass
class ConvertConfig(Config):
    """Everything that defines a conversion run (``run.json`` in the output folder).

    The defaults are the best recipe measured on stories260k (docs/convert.md, "Which settings matter"):
    distillation 0.9, lr 3e-3 with 10 warm-up steps and cosine decay to 0.1x, 32 x 256 tokens per step, beta
    annealed linearly over the first 10 % of the steps."""

    model: str = option(help="SwiGLU Llama: a local Hugging Face folder, or a Hub repo id such as "
                        "TinyLlama/TinyLlama-1.1B-Chat-v1.0 (fetched into the Hub cache)", path=True)
    data: str = option(help="text file (stories separated by <|endoftext|> lines) or a Hugging Face dataset name",
                       path=True)
    tokens: int = option(2_000_000, "training tokens (rounded up to whole optimiser steps)", minimum=1)
    baseline: bool = option(False, "keep the SiLU gate: the equal-token baseline")
    distill: float = option(0.9, "weight w of KL(original || student) in (1 - w) CE + w KL (1: pure KL)",
                            minimum=0, maximum=1)
    tokenizer: Optional[str] = option(None, "tokenizer folder (default: the model folder)", path=True)
    val_data: Optional[str] = option(None, "validation text file (default: validation.txt next to --data)",
                                     path=True)
    val_stories: int = option(200, "validation stories (the first ones of the file)", minimum=1)
    val_max_len: int = option(512, "validation stories are cut to this many tokens", minimum=2)
    seq_len: int = option(256, "training sequence length", minimum=2)
    seed: int = option(0, "seed of the data order", minimum=0)
    first_n_layers: Optional[int] = option(None, "convert only the first N blocks of the model", minimum=1)
    text_field: str = option("text", "column of a Hugging Face dataset")
    train_limit: Optional[int] = option(None, "use only the first N training texts", minimum=1)
    anneal: AnnealConfig = nested(AnnealConfig)
    optim: OptimConfig = nested(OptimConfig, lambda: OptimConfig(lr=3e-3, weight_decay=0.0, warmup=10))
    loop: LoopConfig = nested(LoopConfig, lambda: LoopConfig(batch_size=32, checkpoint_every=50))
    run: RunOptions = nested(RunOptions, lambda: RunOptions(threads=None), identity=False)

    @property
    def mode(self) -> str:
        """``"baseline"`` or ``"bilinear"``."""
        return "baseline" if self.baseline else "bilinear"
