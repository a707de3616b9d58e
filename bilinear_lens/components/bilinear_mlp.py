"""The bilinear MLP block: a gated linear unit without the nonlinearity.

    pre        = x @ W_gate + b_gate                       [batch, pos, d_mlp]
    pre_linear = x @ W_in   + b_in                         [batch, pos, d_mlp]
    post       = pre * pre_linear                          [batch, pos, d_mlp]
    out        = post @ W_out + b_out                      [batch, pos, d_model]

Parameter names and shapes are TransformerLens' own (``GatedMLP``): ``W_in``/``W_gate``
``[d_model, d_mlp]``, ``W_out`` ``[d_mlp, d_model]``, plus ``b_gate``. Unlike ``GatedMLP``, both
branch biases are added *before* the product, which is what TransformerLens' LayerNorm folding
assumes, so ``fold_ln`` is exact for bilinear models. With Hugging Face Llama names:
``W_gate = gate_proj.weight.T``, ``W_in = up_proj.weight.T``, ``W_out = down_proj.weight.T``.

Hook points (names read like paths, ``blocks.{L}.mlp.hook_*``):

* ``hook_in``: the MLP's own input ``x`` (after ``ln2`` and its weight), the vector every
  decomposition refers to.
* ``hook_pre`` (gate branch), ``hook_pre_linear`` (other branch), ``hook_post`` (their product).
* ``hook_eig``: eigenvector activations ``lambda_i (v_i . x)^2`` ``[batch, pos, n, k]``; fires only
  while an eigendecomposition is attached (see :mod:`bilinear_lens.hooks`). Editing it changes
  the MLP output by the matching change along the attached output directions.

The module depends only on ``torch`` and TransformerLens' ``HookPoint`` (kept in TransformerLens 4)
and on a config exposing ``d_model``, ``d_mlp`` and ``dtype`` (a ``HookedTransformerConfig``, a
:class:`BilinearConfig` or a dict), so the same block serves HookedTransformer, the image
classifiers and the converter (the TransformerBridge has its own component over the Hugging Face
projections, :class:`bilinear_lens.bridge.BilinearMLPBridge`, with the same hooks and weight names). Like every TransformerLens MLP it has
``cfg``, ``d_mlp`` and ``act_fn`` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from jaxtyping import Float
from transformer_lens.hook_points import HookPoint

from bilinear_lens.components.act_fns import BILINEAR_ACT_FNS, is_bilinear_act_fn  # noqa: F401 (re-exported)

@dataclass
class BilinearConfig:
    """The only configuration a :class:`BilinearMLP` reads."""

    d_model: int
    d_mlp: int
    dtype: torch.dtype = torch.float32


def _as_config(cfg: Union[Dict[str, Any], Any]) -> Any:
    if isinstance(cfg, dict):
        return BilinearConfig(cfg["d_model"], cfg["d_mlp"], cfg.get("dtype", torch.float32))
    if getattr(cfg, "d_mlp", None) is None:
        raise ValueError("d_mlp must be set to build a BilinearMLP")
    return cfg


class GatedLinearUnit(nn.Module):
    """``out = W_out^T (gate(W_gate^T x + b_gate) * (W_in^T x + b_in)) + b_out``, with TransformerLens names.

    The shared body of :class:`BilinearMLP` (``gate`` = identity) and of the converter's annealed
    block (``gate`` = Swish-beta). Shapes: ``x`` ``[..., d_model]`` -> ``[..., d_model]``;
    ``W_in, W_gate`` ``[d_model, d_mlp]``; ``W_out`` ``[d_mlp, d_model]``; ``b_in, b_gate``
    ``[d_mlp]``; ``b_out`` ``[d_model]``. Hooks ``hook_in``, ``hook_pre`` (``W_gate^T x + b_gate``),
    ``hook_pre_linear`` (``W_in^T x + b_in``), ``hook_post`` (``gate(pre) * pre_linear``).
    """

    def __init__(self, cfg: Union[Dict[str, Any], Any]):
        super().__init__()
        self.cfg = _as_config(cfg)
        self.d_mlp = self.cfg.d_mlp
        d_model, d_mlp, dtype = self.cfg.d_model, self.d_mlp, self.cfg.dtype
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.W_gate = nn.Parameter(torch.empty(d_model, d_mlp, dtype=dtype))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model, dtype=dtype))
        self.b_in = nn.Parameter(torch.zeros(d_mlp, dtype=dtype))
        self.b_gate = nn.Parameter(torch.zeros(d_mlp, dtype=dtype))
        self.b_out = nn.Parameter(torch.zeros(d_model, dtype=dtype))

        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default init: weights ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, biases 0."""
        with torch.no_grad():
            for w, fan_in in ((self.W_in, self.cfg.d_model), (self.W_gate, self.cfg.d_model),
                              (self.W_out, self.d_mlp)):
                w.uniform_(-fan_in**-0.5, fan_in**-0.5)
            for b in (self.b_in, self.b_gate, self.b_out):
                b.zero_()

    def copy_weights_from(
        self, other: nn.Module, names: Tuple[str, ...] = ("W_in", "W_gate", "W_out", "b_in", "b_gate", "b_out")
    ) -> "GatedLinearUnit":
        """Copy the named parameters (values and ``requires_grad``) from ``other``; move to its device."""
        with torch.no_grad():
            for name in names:
                source = getattr(other, name)
                getattr(self, name).copy_(source)
                getattr(self, name).requires_grad_(source.requires_grad)
        return self.to(other.W_in.device)

    def _post(self, x: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_mlp"]:
        # F.linear with contiguous transposes matches HF's nn.Linear layout (and its rounding).
        pre = self.hook_pre(F.linear(x, self.W_gate.T.contiguous(), self.b_gate))
        pre_linear = self.hook_pre_linear(F.linear(x, self.W_in.T.contiguous(), self.b_in))
        return self.hook_post(self.gate(pre) * pre_linear)

    def forward(self, x: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_model"]:
        if self.W_gate.device != x.device:
            x = x.to(self.W_gate.device)
        x = self.hook_in(x)
        post = self._post(x)
        return self._finish(x, post, F.linear(post, self.W_out.T.contiguous(), self.b_out))

    def _finish(self, x: torch.Tensor, post: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Last step of ``forward`` (subclasses add to the output here)."""
        return out


class BilinearMLP(GatedLinearUnit):
    """``out = W_out^T ((W_gate^T x + b_gate) * (W_in^T x + b_in)) + b_out``.

    Shapes: ``x`` ``[..., d_model]`` -> ``[..., d_model]``; ``W_in, W_gate`` ``[d_model, d_mlp]``;
    ``W_out`` ``[d_mlp, d_model]``; ``b_in, b_gate`` ``[d_mlp]``; ``b_out`` ``[d_model]``.
    """

    eigen: Optional["AttachedEigen"]  # noqa: F821 - set by bilinear_lens.hooks

    def __init__(self, cfg: Union[Dict[str, Any], Any]):
        super().__init__(cfg)
        self.act_fn = nn.Identity()
        self.hook_eig = HookPoint()  # [batch, pos, n_directions, k]
        self.eigen = None

    @classmethod
    def from_dims(cls, d_model: int, d_mlp: int, dtype: torch.dtype = torch.float32) -> "BilinearMLP":
        """A stand-alone block (outside a transformer), initialised like ``nn.Linear``."""
        mlp = cls(BilinearConfig(d_model, d_mlp, dtype))
        mlp.reset_parameters()
        return mlp

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        return pre

    @property
    def has_bias(self) -> bool:
        """True when a branch bias is non-zero (then decompositions use ``[x, 1]``)."""
        return bool(self.b_in.detach().abs().max() > 0 or self.b_gate.detach().abs().max() > 0)

    def _finish(self, x: torch.Tensor, post: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Add the change of output implied by edits at ``hook_eig`` (when eigenvectors are attached)."""
        if self.eigen is not None:
            out = out + self.eigen.edit(x, self.hook_eig, post=post)
        return out
