"""The bilinear MLP as a TransformerBridge component (TransformerLens 3.9 and 4.x).

For a Hugging Face ``LlamaMLP`` with ``hidden_act="linear"`` (projections ``gate``, ``in`` = up,
``out`` = down, each a ``LinearBridge``)::

    pre        = gate(x)     = x @ W_gate + b_gate            [batch, pos, d_mlp]   hook_pre
    pre_linear = in(x)       = x @ W_in   + b_in              [batch, pos, d_mlp]   hook_pre_linear
    post       = pre * pre_linear                             [batch, pos, d_mlp]   hook_post
    out        = out(post)   = post @ W_out + b_out           [batch, pos, d_model] hook_out

``hook_in`` is the MLP input ``x`` [batch, pos, d_model] (after ``ln2``; with its weight in raw
mode, without it after ``enable_compatibility_mode()``, whose ``fold_ln`` moves the weight into
``W_in``/``W_gate``). ``hook_pre``/``hook_pre_linear``/``hook_post`` are the bridge's names
``gate.hook_out``/``in.hook_out``/``out.hook_in`` (aliases, as for every gated MLP bridge).
``hook_eig`` [batch, pos, n, k] fires while an eigendecomposition is attached
(:func:`bilinear_lens.attach_eigenvectors`), exactly as on :class:`~bilinear_lens.BilinearMLP`.

Unlike TransformerLens' ``GatedMLPBridge`` (whose processed-weights path resolves ``"linear"``
to SiLU), the product is computed here in both modes, so the component never depends on an
activation-name lookup. ``W_in``, ``W_gate``, ``W_out`` ``[d_model, d_mlp]``/``[d_mlp, d_model]``
and ``b_in``, ``b_gate``, ``b_out`` (zeros where the checkpoint has no bias) are read from the
projections, i.e. the processed weights after ``enable_compatibility_mode()``: the same
coordinates as ``hook_in``, which is what every decomposition needs.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge.generalized_components.gated_mlp import GatedMLPBridge


class BilinearMLPBridge(GatedMLPBridge):
    """``out = down((gate x + b_gate) * (up x + b_in)) + b_out`` with bilinear-lens hooks and weights."""

    def __init__(self, name: Optional[str], config: Optional[Any] = None, submodules: Optional[dict] = None,
                 optional: bool = False):
        super().__init__(name, config, submodules=submodules, optional=optional)
        self.hook_eig = HookPoint()  # [batch, pos, n_directions, k]
        self.eigen = None  # an AttachedEigen while attach_eigenvectors/truncated_mlp is active

    def _bias(self, name: str, width: int) -> Tensor:
        projection = getattr(self, name)
        bias = getattr(projection.original_component, "bias", None)
        if bias is None:
            weight = projection.original_component.weight
            return torch.zeros(width, dtype=weight.dtype, device=weight.device)
        return bias

    @property
    def d_mlp(self) -> int:
        return self.W_in.shape[1]

    @property
    def b_in(self) -> Tensor:  # [d_mlp]
        return self._bias("in", self.W_in.shape[1])

    @property
    def b_gate(self) -> Tensor:  # [d_mlp]
        return self._bias("gate", self.W_in.shape[1])

    @property
    def b_out(self) -> Tensor:  # [d_model]
        return self._bias("out", self.W_in.shape[0])

    @property
    def has_bias(self) -> bool:
        """True when a branch bias is non-zero (then decompositions use ``[x, 1]``)."""
        return bool(self.b_in.detach().abs().max() > 0 or self.b_gate.detach().abs().max() > 0)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        x = self.hook_in(args[0])
        pre = self.gate(x)  # LinearBridge: fires gate.hook_in / gate.hook_out (= hook_pre)
        pre_linear = getattr(self, "in")(x)  # in.hook_out = hook_pre_linear
        post = self.out.hook_in(pre * pre_linear)  # = hook_post
        out = self.out.hook_out(self.out.original_component(post))
        if self.eigen is not None:
            out = out + self.eigen.edit(x, self.hook_eig, post=post)
        return self.hook_out(out)
