"""Settings of the language models: the model shape (:class:`LMShape`) and ``train-lm``'s run
(:class:`LMTrainConfig`, whose leaf fields are its flags). Light (no torch).

    mlp="bilinear": out = W_out^T ((W_gate^T x) * (W_in^T x))        (act_fn="bilinear")
    mlp="swiglu":   out = W_out^T (silu(W_gate^T x) * (W_in^T x))     (act_fn="silu")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bilinear_lens.config import Config, RunOptions, nested, option
from bilinear_lens.runs.errors import RunError
from bilinear_lens.training.config import LoopConfig, OptimConfig

MLP_KINDS = {"bilinear": "bilinear", "swiglu": "silu"}
DEFAULT_TOKENS = 1_200_000  # when neither tokens nor epochs is given

__all__ = ["DEFAULT_TOKENS", "LMShape", "LMTrainConfig", "MLP_KINDS"]


@dataclass
class LMShape(Config):
    """Model shape. ``d_mlp`` defaults to ``4 * d_model``; ``d_head`` is ``d_model // n_heads``."""

    mlp: str = option("bilinear", "MLP kind", choices=tuple(MLP_KINDS))
    d_model: int = option(128, "residual width", minimum=1)
    n_layers: int = option(2, "transformer blocks", minimum=1, aliases=("--layers",))
    n_heads: int = option(4, "attention heads", minimum=1, aliases=("--heads",))
    d_mlp: Optional[int] = option(None, "MLP width (default 4 * d_model)", minimum=1)
    n_ctx: int = option(128, "context length (the training block size)", minimum=2, aliases=("--ctx",))
    d_vocab: int = option(4096, "vocabulary size (the tokenizer's)", minimum=1, cli=False, identity=False)
    seed: int = option(0, "initialisation seed", minimum=0, cli=False, identity=False)

    def _check(self) -> None:
        if self.d_model % self.n_heads:
            raise RunError(f"--d-model {self.d_model} is not divisible by --n-heads {self.n_heads}; choose "
                           "--n-heads dividing --d-model with an even quotient.")
        if (self.d_model // self.n_heads) % 2:
            raise RunError(f"d_head = d_model / n_heads = {self.d_model // self.n_heads} must be even for rotary "
                           "embeddings; choose --n-heads dividing --d-model with an even quotient.")


@dataclass
class LMTrainConfig(Config):
    """Everything ``train_lm`` needs. Defaults: ~1.6 M parameters (0.5 M without embeddings), 1.2 M tokens:
    about 15-20 minutes on one thread of a shared 2-core CPU. Give at most one of ``tokens`` / ``epochs``."""

    data: str = option(help="training text (stories separated by lines '<|endoftext|>', blank lines or one per "
                       "line) or a Hugging Face dataset name", path=True)
    val_data: Optional[str] = option(None, "validation text (default: hold out 5% of the training blocks)",
                                     path=True)
    tokenizer: Optional[str] = option(None, "tokenizer folder (default: train one on --data)", path=True)
    vocab_size: int = option(4096, "tokenizer vocabulary size (when the tokenizer is trained here)", minimum=258,
                             aliases=("--vocab",))
    shape: LMShape = nested(LMShape)
    tokens: Optional[int] = option(None, f"training tokens (default {DEFAULT_TOKENS:,})", minimum=1)
    epochs: Optional[float] = option(None, "training epochs (instead of --tokens)", minimum=0,
                                     inclusive=(False, True))
    seed: int = option(0, "seed of the initialisation and the data order", minimum=0)
    val_fraction: float = option(0.05, "held-out fraction without --val-data", minimum=0, maximum=1,
                                 inclusive=False, cli=False)
    eval_tokens: int = option(32_768, "validation tokens of each periodic evaluation", minimum=1, cli=False)
    final_eval_tokens: Optional[int] = option(262_144, "validation tokens of the final evaluation (None: all)",
                                              minimum=1, cli=False)
    optim: OptimConfig = nested(OptimConfig, lambda: OptimConfig(lr=5e-3, weight_decay=0.1, warmup=None))
    loop: LoopConfig = nested(LoopConfig, lambda: LoopConfig(eval_every=50, checkpoint_every=100))
    run: RunOptions = nested(RunOptions, lambda: RunOptions(out="runs/lm"), identity=False)

    def _check(self) -> None:
        if self.tokens is not None and self.epochs is not None:
            raise RunError("give --tokens or --epochs, not both.")
