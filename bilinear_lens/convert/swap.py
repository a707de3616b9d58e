"""Swapping the MLPs of a HookedTransformer: SwiGLU -> annealed gate -> :class:`BilinearMLP`.

Every swap ends with ``model.setup()``: TransformerLens builds its hook registry once, so a module
replaced after construction would otherwise leave stale hooks pointing at the detached block.
"""

from __future__ import annotations

from typing import Any, Iterable

from bilinear_lens.components.bilinear_mlp import BilinearMLP
from bilinear_lens.convert.annealed_mlp import AnnealedGateMLP, is_swiglu


def check_convertible(model: Any) -> None:
    """Raise a clear ``ValueError`` unless every block of ``model`` has a SwiGLU MLP."""
    blocks = list(getattr(model, "blocks", []))
    if not blocks:
        raise ValueError("the model has no transformer blocks; expected a HookedTransformer")
    if all(isinstance(b.mlp, BilinearMLP) for b in blocks if hasattr(b, "mlp")) and hasattr(blocks[0], "mlp"):
        raise ValueError("the model is already bilinear (its MLPs are BilinearMLP blocks); "
                         "there is nothing to convert")
    bad = [i for i, b in enumerate(blocks) if not (hasattr(b, "mlp") and is_swiglu(b.mlp))]
    if bad:
        cfg = model.cfg
        raise ValueError(f"blocks {bad} have no SwiGLU MLP (act_fn={cfg.act_fn!r}, "
                         f"gated_mlp={cfg.gated_mlp}); the converter needs a Llama-style SiLU-gated MLP "
                         "in every block")


def swap_to_annealed(model: Any, beta: float = 1.0) -> Any:
    """Replace each SwiGLU MLP by an :class:`AnnealedGateMLP` (same weights, gate ``phi_beta``).

    At ``beta = 1`` the model computes exactly what it computed before. Returns ``model``.
    """
    check_convertible(model)
    for block in model.blocks:
        old = block.mlp
        new = AnnealedGateMLP.from_gated(old, beta=beta)
        for name, p in new.named_parameters():
            p.requires_grad_(getattr(old, name).requires_grad if hasattr(old, name) else False)
        block.mlp = new
    model.setup()
    return model


def set_beta(model: Any, beta: float) -> None:
    """Set the gate parameter ``beta`` of every annealed block."""
    for m in model.modules():
        if isinstance(m, AnnealedGateMLP):
            m.beta = float(beta)


def annealed_blocks(model: Any) -> Iterable[AnnealedGateMLP]:
    return [m for m in model.modules() if isinstance(m, AnnealedGateMLP)]


def finalize_bilinear(model: Any) -> Any:
    """Replace every annealed block (which must be at ``beta = 0``) by the equal :class:`BilinearMLP`
    and set ``cfg.act_fn = "bilinear"``. Exact: the weights are copied unchanged."""
    for i, block in enumerate(model.blocks):
        mlp = block.mlp
        if not isinstance(mlp, AnnealedGateMLP):
            raise ValueError(f"block {i} is not an annealed-gate MLP; call swap_to_annealed first")
        if mlp.beta != 0.0:
            raise ValueError(f"block {i} is at beta={mlp.beta}; only beta=0 is exactly bilinear "
                             "(finish the annealing schedule first)")
        block.mlp = mlp.to_bilinear()
    model.cfg.act_fn = "bilinear"  # one shared config object for every component
    model.setup()
    return model


def convert_to_bilinear(model: Any) -> Any:
    """Swap without finetuning (``beta`` jumps straight to 0): the "converted, before finetuning"
    model. Weights are shared with the SwiGLU model's values, not with its tensors."""
    swap_to_annealed(model, beta=0.0)
    return finalize_bilinear(model)
