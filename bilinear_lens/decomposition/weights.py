"""The one place where decompositions read bilinear weights from a model.

Any model whose bilinear layers are :class:`~bilinear_lens.BilinearMLP` modules works:

* a ``HookedTransformer`` (or ``HookedSAETransformer``): layer ``L`` is ``model.blocks[L].mlp``;
* any other model exposing ``model.bilinear_layers()`` -> a sequence of ``BilinearMLP`` (the image
  classifier does). A new model type needs only that method.

Notation (TransformerLens shapes, paper names in brackets): ``W_gate`` ``[d_model, d_mlp]`` (W),
``W_in`` ``[d_model, d_mlp]`` (V), ``W_out`` ``[d_mlp, d_model]`` (P^T). With non-zero branch
biases the input is taken in homogeneous coordinates ``[x, 1]``: ``W_gate' = [W_gate; b_gate]``,
``W_in' = [W_in; b_in]`` (``[d_model + 1, d_mlp]``), so ``(W_gate'^T x')*(W_in'^T x')`` is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.components.bilinear_mlp import BilinearMLP


def append_one(x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model_plus_1"]:
    """Homogeneous coordinates ``[x, 1]`` (the input in which branch biases become weights)."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


@dataclass(frozen=True)
class BilinearWeights:
    """Detached weights of one bilinear layer, in the input coordinates decompositions use.

    ``W_in``, ``W_gate``: ``[d, d_mlp]`` with ``d = d_model`` (no branch bias) or ``d_model + 1``
    (homogeneous ``[x, 1]``); ``W_out``: ``[d_mlp, d_model]``; ``b_out``: ``[d_model]`` (not part of
    any interaction matrix).
    """

    W_in: Float[Tensor, "d d_mlp"]
    W_gate: Float[Tensor, "d d_mlp"]
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, "d_model"]
    homogeneous: bool
    layer: int
    hook_in: Optional[str]  # full hook name of the layer's input, e.g. "blocks.0.mlp.hook_in"

    @property
    def d(self) -> int:
        return self.W_in.shape[0]

    @property
    def d_model(self) -> int:
        return self.W_out.shape[1]

    def lift(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d"]:
        """Inputs in decomposition coordinates: ``x`` itself, or ``[x, 1]`` when homogeneous."""
        if not self.homogeneous or x.shape[-1] == self.d:
            return x
        return append_one(x)

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "BilinearWeights":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return BilinearWeights(move(self.W_in), move(self.W_gate), move(self.W_out), move(self.b_out),
                               self.homogeneous, self.layer, self.hook_in)


def _describe_mlp(mlp: Any, model: Any) -> str:
    cfg = getattr(mlp, "cfg", None) or getattr(model, "cfg", None)
    act = getattr(cfg, "act_fn", None)
    kind = type(mlp).__name__
    if act == "silu" and getattr(cfg, "gated_mlp", False):
        return f"a {kind} with act_fn='silu' (SwiGLU)"
    return f"a {kind} with act_fn={act!r}" if act is not None else f"a {kind}"


def bilinear_layer(model: Any, layer: int) -> BilinearMLP:
    """The :class:`BilinearMLP` module of ``model`` at index ``layer`` (clear errors otherwise)."""
    if hasattr(model, "bilinear_layers"):
        layers = list(model.bilinear_layers())
    elif hasattr(model, "blocks"):
        layers = [block.mlp for block in model.blocks]
    else:
        raise TypeError(
            f"{type(model).__name__} exposes no bilinear layers: pass a HookedTransformer with "
            "bilinear blocks, or give the model a bilinear_layers() method returning its BilinearMLPs."
        )
    if not -len(layers) <= layer < len(layers):
        raise IndexError(f"layer {layer} is out of range: the model has {len(layers)} layers.")
    mlp = layers[layer]
    if not isinstance(mlp, BilinearMLP):
        raise TypeError(
            f"layer {layer} is {_describe_mlp(mlp, model)}, not a bilinear MLP. Weight-based "
            "decomposition is exact only for bilinear layers (act_fn='bilinear' or 'linear'); "
            "convert the model first (bilinear_lens.convert)."
        )
    return mlp


def bilinear_weights(model: Any, layer: int, dtype: Optional[torch.dtype] = None) -> BilinearWeights:
    """Read layer ``layer``'s weights (homogeneous coordinates when a branch bias is non-zero)."""
    mlp = bilinear_layer(model, layer)
    W_in, W_gate = mlp.W_in.detach(), mlp.W_gate.detach()
    homogeneous = mlp.has_bias
    if homogeneous:
        W_in = torch.cat([W_in, mlp.b_in.detach()[None]], dim=0)
        W_gate = torch.cat([W_gate, mlp.b_gate.detach()[None]], dim=0)
    n_layers = len(list(model.bilinear_layers())) if hasattr(model, "bilinear_layers") else len(model.blocks)
    weights = BilinearWeights(W_in, W_gate, mlp.W_out.detach(), mlp.b_out.detach(), homogeneous,
                              layer % n_layers, mlp.hook_in.name)
    return weights.to(dtype=dtype) if dtype is not None else weights
