"""The one place where decompositions read bilinear weights from a model.

Any model whose bilinear layers are :class:`~bilinear_lens.BilinearMLP` modules works:

* a ``HookedTransformer`` (or ``HookedSAETransformer``): layer ``L`` is ``model.blocks[L].mlp``;
* a ``TransformerBridge`` (or SAELens' ``SAETransformerBridge``) booted from a bilinear Llama folder:
  ``model.blocks[L].mlp`` is a :class:`~bilinear_lens.bridge.BilinearMLPBridge` (raw or compatibility
  mode; the weights are read from its projections, processed ones after ``fold_ln``);
* any other model exposing ``model.bilinear_layers()`` -> a sequence of ``BilinearMLP`` (the image
  classifier does). A new model type needs only that method.

Notation (TransformerLens shapes, paper names in brackets): ``W_gate`` ``[d_model, d_mlp]`` (W),
``W_in`` ``[d_model, d_mlp]`` (V), ``W_out`` ``[d_mlp, d_model]`` (P^T). With non-zero branch
biases the input is taken in homogeneous coordinates ``[x, 1]``: ``W_gate' = [W_gate; b_gate]``,
``W_in' = [W_in; b_in]`` (``[d_model + 1, d_mlp]``), so ``(W_gate'^T x')*(W_in'^T x')`` is exact.

Weights holding NaN or inf are refused with a one-line error naming the tensor. Reduced-precision
weights (bfloat16, float16) are read in float32 unless a ``dtype`` is asked for: every
decomposition then computes, and returns its results, in float32 (CPU ``eigh``/``qr`` have no
bfloat16 kernels, and half precision is too coarse for eigenvectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.components.bilinear_mlp import BilinearMLP
from bilinear_lens.runs.checks import require_finite

__all__ = ["BilinearModel", "BilinearWeights", "ModelWithBilinearLayers", "TransformerModel", "REDUCED_PRECISION", "append_one", "bilinear_layer",
           "bilinear_layer_types", "bilinear_weights", "mlp_layers", "require_finite_directions", "working_dtype"]

REDUCED_PRECISION = (torch.bfloat16, torch.float16)
"""Weight dtypes decomposed in float32 (:func:`working_dtype`)."""


def working_dtype(dtype: torch.dtype, requested: Optional[torch.dtype] = None) -> torch.dtype:
    """``requested`` if given, else float32 for reduced-precision ``dtype``, else ``dtype`` itself."""
    if requested is not None:
        return requested
    return torch.float32 if dtype in REDUCED_PRECISION else dtype


def require_finite_directions(directions: Tensor, what: str = "directions") -> None:
    """A one-line ``ValueError`` when output directions (or eigenvectors) hold NaN or inf."""
    if directions.is_floating_point() and not bool(torch.isfinite(directions).all()):
        bad = int((~torch.isfinite(directions)).sum())
        raise ValueError(f"{what} hold {bad} NaN or inf values; pass finite vectors.")


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


@runtime_checkable
class BilinearModel(Protocol):
    """A model whose bilinear layers decompositions can read without knowing its type: anything with a
    ``bilinear_layers()`` method returning its :class:`BilinearMLP` modules in order (the image classifier).
    Transformers (``HookedTransformer``, ``TransformerBridge``) are read through ``model.blocks[L].mlp``
    instead (:func:`mlp_layers`)."""

    def bilinear_layers(self) -> Sequence[Any]: ...


@runtime_checkable
class TransformerModel(Protocol):
    """A ``HookedTransformer`` or ``TransformerBridge``: layer ``L``'s MLP is ``blocks[L].mlp``."""

    blocks: Any


ModelWithBilinearLayers = Union[BilinearModel, TransformerModel]
"""What every decomposition and hook accepts (:func:`mlp_layers`)."""


def mlp_layers(model: ModelWithBilinearLayers) -> List[Any]:
    """The MLP of every layer of ``model``, in order: ``model.bilinear_layers()`` (:class:`BilinearModel`),
    else ``[block.mlp for block in model.blocks]`` (a transformer); a ``TypeError`` naming the fix otherwise.
    The one place that lists a model's layers (decompositions, hooks, trees)."""
    if isinstance(model, BilinearModel):
        return list(model.bilinear_layers())
    if hasattr(model, "blocks"):
        return [block.mlp for block in model.blocks]
    raise TypeError(
        f"{type(model).__name__} exposes no bilinear layers: pass a HookedTransformer or TransformerBridge "
        "with bilinear blocks, or give the model a bilinear_layers() method returning its BilinearMLPs."
    )


def bilinear_layer_types() -> tuple:
    """The module types decompositions accept: :class:`BilinearMLP` and the bridge's ``BilinearMLPBridge``."""
    from bilinear_lens.bridge.mlp import BilinearMLPBridge

    return (BilinearMLP, BilinearMLPBridge)


def _act_fn(mlp: Any, model: Any) -> Optional[str]:
    for cfg in (getattr(mlp, "cfg", None), getattr(mlp, "config", None), getattr(model, "cfg", None)):
        act = getattr(cfg, "act_fn", None)
        if isinstance(act, str):
            return act
    return None


def not_bilinear_message(mlp: Any, model: Any, layer: int) -> str:
    """Why layer ``layer`` is refused, and the one fix that applies to it."""
    from bilinear_lens.components.bilinear_mlp import is_bilinear_act_fn

    kind, act = type(mlp).__name__, _act_fn(mlp, model)
    what = f"layer {layer} is a {kind}" + (f" with act_fn={act!r}" if act is not None else "")
    if is_bilinear_act_fn(act):
        return (
            f"{what}: it computes a bilinear MLP but was built without bilinear-lens' component, so it has no "
            "hook_eig and its weights are not read. Build or boot the model after `import bilinear_lens` "
            "(HookedTransformer: BilinearMLP; TransformerBridge.boot_transformers: BilinearMLPBridge)."
        )
    if act in ("silu", "swish") and getattr(getattr(model, "cfg", None), "gated_mlp", True):
        return (
            f"{what} (SwiGLU), not a bilinear MLP: weight-based decomposition is exact only for bilinear "
            "MLPs. Convert the model to bilinear first (`bilinear-lens convert`, docs/convert.md)."
        )
    return f"{what}, not a bilinear MLP: weight-based decompositions need bilinear MLP layers."


def bilinear_layer(model: ModelWithBilinearLayers, layer: int) -> BilinearMLP:
    """Layer ``layer``'s bilinear MLP (:class:`BilinearMLP`, or ``BilinearMLPBridge`` on a TransformerBridge).

    Both expose ``W_in``/``W_gate``/``W_out``/``b_in``/``b_gate``/``b_out``, ``has_bias``, ``hook_in``,
    ``hook_eig`` and ``eigen``; on a bridge the weights are the processed ones after
    ``enable_compatibility_mode()``, in the coordinates of its ``hook_in``.
    """
    layers = mlp_layers(model)
    if not -len(layers) <= layer < len(layers):
        raise IndexError(f"layer {layer} is out of range: the model has {len(layers)} layers.")
    mlp = layers[layer]
    if not isinstance(mlp, bilinear_layer_types()):
        raise TypeError(not_bilinear_message(mlp, model, layer % len(layers)))
    return mlp


def bilinear_weights(model: ModelWithBilinearLayers, layer: int, dtype: Optional[torch.dtype] = None) -> BilinearWeights:
    """Read layer ``layer``'s weights (homogeneous coordinates when a branch bias is non-zero), in
    ``dtype`` (default: the weights' own, float32 for bfloat16/float16); NaN/inf are refused."""
    mlp = bilinear_layer(model, layer)
    hook_name = getattr(mlp.hook_in, "name", None)
    prefix = hook_name.rsplit("hook_in", 1)[0] if hook_name else f"layer {layer} "
    require_finite([(prefix + name, getattr(mlp, name)) for name in ("W_in", "W_gate", "W_out", "b_in", "b_gate",
                                                                      "b_out")],
                   "the bilinear weights", "the model is broken (diverged training or a corrupt file): load a "
                   "finite checkpoint")
    dtype = working_dtype(mlp.W_in.dtype, dtype)
    W_in, W_gate = mlp.W_in.detach(), mlp.W_gate.detach()
    homogeneous = mlp.has_bias
    if homogeneous:
        W_in = torch.cat([W_in, mlp.b_in.detach()[None]], dim=0)
        W_gate = torch.cat([W_gate, mlp.b_gate.detach()[None]], dim=0)
    weights = BilinearWeights(W_in, W_gate, mlp.W_out.detach(), mlp.b_out.detach(), homogeneous,
                              layer % len(mlp_layers(model)), getattr(mlp.hook_in, "name", None))
    return weights.to(dtype=dtype) if dtype != weights.W_in.dtype else weights
