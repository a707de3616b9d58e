"""Settings of the SAE commands (light: no torch, no SAELens): what an SAE is trained on and how
(:class:`SAETrainConfig`), the comparison (:class:`CompareConfig`), and the two commands' whole settings
(:class:`TrainSAECommand`, :class:`CompareCommand`), whose leaf fields are their flags.

The two spaces of the weight-based decomposition, and the hook an SAE of each side reads:

* ``hook="in"``: ``blocks.{L}.mlp.hook_in``, the MLP's own input ``x`` ``[batch, pos, d_model]``: where
  eigenvectors live (``u . (MLP(x) - b_out) = x^T Q(u) x = sum_i lambda_i (v_i . x)^2``);
* ``hook="out"``: ``blocks.{L}.hook_mlp_out``, the MLP output: where output directions ``u`` live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

from bilinear_lens.config import Config, RunOptions, nested, option
from bilinear_lens.runs.checks import check_int
from bilinear_lens.runs.errors import RunError

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64)

__all__ = ["CompareCommand", "CompareConfig", "DEFAULT_KS", "HOOKS", "SAETrainConfig", "TrainSAECommand",
           "sae_hook_name"]

HOOKS = {"in": "blocks.{layer}.mlp.hook_in", "out": "blocks.{layer}.hook_mlp_out"}
"""The hook an SAE of each side is trained on (``str.format(layer=L)``)."""


def sae_hook_name(layer: int, side: str) -> str:
    """``blocks.L.mlp.hook_in`` for ``side="in"``, ``blocks.L.hook_mlp_out`` for ``side="out"``."""
    if side not in HOOKS:
        raise ValueError(f"hook must be 'in' (MLP input) or 'out' (MLP output), got {side!r}.")
    return HOOKS[side].format(layer=layer)



@dataclass
class SAETrainConfig(Config):
    """What to train. ``d_sae = expansion * d_model``; steps ``= training_tokens // batch_size_tokens``.

    ``k`` is used by architectures with a ``k`` (topk, batchtopk, abstopk, matryoshka_batchtopk);
    ``sae_kwargs`` is passed on to the architecture's SAELens training config (e.g.
    ``{"l1_coefficient": 5.0}`` for ``standard``). Position 0 of every row (the attention sink /
    BOS) is left out of training, as in the paper.
    """

    layer: Optional[int] = option(None, "the bilinear layer", minimum=0, required=True)
    hook: str = option("in", "in: blocks.L.mlp.hook_in (where eigenvectors live); out: blocks.L.hook_mlp_out",
                       choices=tuple(HOOKS))
    architecture: str = option("topk", "an SAELens training architecture (topk, batchtopk, jumprelu, standard, ...)")
    k: int = option(30, "active features per token (TopK-style SAEs)", minimum=1)
    expansion: int = option(4, "d_sae = expansion * d_model", minimum=1)
    training_tokens: int = option(2_000_000, "training tokens", minimum=1, aliases=("--tokens",))
    context_size: int = option(128, "tokens per row", minimum=2, aliases=("--context",))
    batch_size_tokens: int = option(4096, "tokens per step", minimum=1, aliases=("--batch-tokens",))
    lr: float = option(4e-4, "Adam learning rate", minimum=0, inclusive=(False, True))
    lr_end: Optional[float] = option(None, "final learning rate of the cosine schedule (default: lr / 10)",
                                     minimum=0)
    n_checkpoints: int = option(4, "checkpoints during training (resumable)", minimum=0, aliases=("--checkpoints",))
    dead_feature_window: int = option(1000, "steps without firing before a feature counts as dead", minimum=1,
                                      cli=False)
    feature_sampling_window: int = option(2000, "steps per sparsity window (the saved log-sparsity)", minimum=1,
                                          cli=False)
    eval_batches: int = option(8, "batches of SAELens' evals", minimum=1, cli=False)
    eval_batch_prompts: int = option(16, "rows per eval batch", minimum=1, cli=False)
    seed: int = option(42, "seed of the initialisation and the data order", minimum=0)
    device: str = option("cpu", "device of the SAE", cli=False, identity=False)
    sae_kwargs: Dict[str, Any] = option(default_factory=dict, help="more options of the architecture's SAELens "
                                        "training config, as JSON (e.g. '{\"l1_coefficient\": 5}')")

    @property
    def hook_name(self) -> str:
        return sae_hook_name(self.layer, self.hook)

    def _check(self) -> None:
        if self.batch_size_tokens > self.training_tokens:
            raise RunError(f"--training-tokens {self.training_tokens} is smaller than one batch (--batch-size-tokens "
                           f"{self.batch_size_tokens}); pass more tokens or a smaller batch.")

    def check_layer(self, n_layers: int) -> None:
        """The layer exists in a model of ``n_layers`` layers."""
        check_int("--layer", self.layer, 0, n_layers - 1)

    def identity(self) -> Dict[str, Any]:
        """The settings that define the SAE (``device`` does not), and its hook."""
        return {**super().identity(), "hook_name": self.hook_name}


@dataclass
class CompareConfig(Config):
    """Settings of ``compare``. ``feature``: the output feature shown side by side (default: the
    qualifying feature with the largest top-2 ``|lambda|``); ``token``: also decompose the output
    direction of this token (``W_U[:, t] - mean_t' W_U[:, t']``)."""

    layer: Optional[int] = option(None, "the bilinear layer", minimum=0, required=True)
    ks: Sequence[int] = option(DEFAULT_KS, "eigenvectors kept in the low-rank curve", minimum=1)
    min_active: int = option(10, "tokens an output feature must fire on to be scored", minimum=1, cli=False)
    n_show: int = option(4, "output features whose interaction matrices are shown", minimum=1,
                         aliases=("--show",))
    top_interactions: int = option(15, "interactions listed per feature", minimum=1, cli=False)
    n_eig: int = option(6, "eigenvectors shown side by side", minimum=1, cli=False)
    n_align: int = option(3, "input-SAE features aligned with each eigenvector", minimum=1, cli=False)
    n_contexts: int = option(5, "top contexts per feature or eigenvector", minimum=1, cli=False)
    feature: Optional[int] = option(None, "output feature shown side by side", minimum=0)
    token: Optional[str] = option(None, "also decompose this token's output direction")
    batch_size: int = option(16, "rows per forward pass", minimum=1, cli=False)
    extra: Dict[str, Any] = option(default_factory=dict, help="free-form notes", cli=False, identity=False)


@dataclass
class TrainSAECommand(Config):
    """``train-sae``: the model and text an SAE is trained on, the SAE's settings, the run options."""

    model: Optional[str] = option(None, "model folder (HF Llama, e.g. OUT/model of train-lm)", required=True)
    data: Optional[str] = option(None, "text file (stories separated by <|endoftext|> lines)", required=True)
    eval_rows: int = option(64, "rows held out for SAELens' evals", minimum=1)
    sae: SAETrainConfig = nested(SAETrainConfig)
    run: RunOptions = nested(RunOptions, identity=False)


@dataclass
class CompareCommand(Config):
    """``compare``: the model, its two SAEs and the text, the comparison's settings, the run options."""

    model: Optional[str] = option(None, "model folder", required=True)
    sae_in: Optional[str] = option(None, "SAE on blocks.L.mlp.hook_in", required=True)
    sae_out: Optional[str] = option(None, "SAE on blocks.L.hook_mlp_out", required=True)
    data: Optional[str] = option(None, "text file", required=True)
    rows: int = option(128, "rows of --context tokens to analyse", minimum=1)
    context: int = option(128, "tokens per row", minimum=2)
    compare: CompareConfig = nested(CompareConfig)
    run: RunOptions = nested(RunOptions, identity=False)
