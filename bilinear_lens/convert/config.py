"""The settings of one conversion run (``ConvertConfig``: ``run.json``'s identity, option checks)
and its step counter."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from bilinear_lens.runs import RunError, check_float, check_int, check_resume_overwrite

# Fields that do not change what a run computes (a resumed run may differ in them).
_NOT_IDENTITY = ("out", "resume", "overwrite", "fail_at_step", "checkpoint_every", "eval_every",
                 "progress", "threads", "fsdp")
RUN_FILES = ("run.json", "metrics.json", "checkpoint", "model")


@dataclass
class ConvertConfig:
    """Everything that defines a conversion run (``run.json`` in the output folder)."""

    model: str  # local Llama folder (SwiGLU)
    data: str  # text file (stories separated by <|endoftext|> lines) or HF dataset name
    out: str
    tokens: int = 2_000_000  # training tokens (rounded up to whole optimiser steps)
    mode: str = "bilinear"  # "bilinear" | "baseline"
    distill: float = 0.0  # weight w of KL(teacher || student); 0 = plain LM loss
    tokenizer: Optional[str] = None  # default: the model folder
    val_data: Optional[str] = None  # default: validation.txt next to a local data file
    val_stories: int = 200
    val_max_len: int = 512
    seq_len: int = 256
    batch_size: int = 16  # sequences per micro-batch per process
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 20
    lr_decay: str = "cosine"
    min_lr_ratio: float = 0.1
    anneal_frac: float = 0.3
    beta_schedule: str = "linear"
    grad_clip: float = 1.0
    bf16: bool = False
    grad_checkpointing: bool = False
    fsdp: bool = False  # shard weights, gradients and optimiser state over processes (FSDP2)
    seed: int = 0
    first_n_layers: Optional[int] = None
    text_field: str = "text"
    train_limit: Optional[int] = None  # use only the first N training texts
    eval_every: int = 0  # steps between validations (0: about 4 per run)
    checkpoint_every: int = 50
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    threads: Optional[int] = None  # torch CPU threads (1 is fastest on a busy shared CPU)
    fail_at_step: Optional[int] = None  # testing: raise in the middle of this step

    def identity(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in _NOT_IDENTITY}

    def check(self) -> None:
        """One-line :class:`RunError` naming the option (its ``convert`` flag) and its range."""
        check_resume_overwrite(self.resume, self.overwrite)
        for flag, value, lo in (("--tokens", self.tokens, 1), ("--val-stories", self.val_stories, 1),
                                ("--val-max-len", self.val_max_len, 2), ("--seq-len", self.seq_len, 2),
                                ("--batch-size", self.batch_size, 1), ("--grad-accum", self.grad_accum, 1),
                                ("--warmup", self.warmup, 0), ("--seed", self.seed, 0),
                                ("--first-n-layers", self.first_n_layers, 1),
                                ("--train-limit", self.train_limit, 1), ("--eval-every", self.eval_every, 0),
                                ("--checkpoint-every", self.checkpoint_every, 1),
                                ("--threads", self.threads, 0), ("fail_at_step", self.fail_at_step, 0)):
            check_int(flag, value, minimum=lo)
        check_float("--lr", self.lr, minimum=0, inclusive=(False, True))
        check_float("--weight-decay", self.weight_decay, minimum=0)
        check_float("--min-lr-ratio", self.min_lr_ratio, 0, 1)
        check_float("--anneal-frac", self.anneal_frac, 0, 1)
        check_float("--grad-clip", self.grad_clip, minimum=0)
        check_float("--distill", self.distill, 0, 1, inclusive=(True, False))
        if self.mode not in ("bilinear", "baseline"):
            raise RunError(f"mode={self.mode!r}; use 'bilinear' or 'baseline'")


class StepCounter:
    """Step and history, saved with the accelerator state."""

    def __init__(self) -> None:
        self.step, self.history, self.extra = 0, [], {}

    def state_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "history": self.history, "extra": self.extra}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step, self.history, self.extra = state["step"], state["history"], state["extra"]


class InjectedFailure(RuntimeError):
    """Raised by ``fail_at_step`` (tests of resuming)."""
