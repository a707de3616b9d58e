"""The annealed-gate MLP: SwiGLU at ``beta = 1``, exactly a :class:`BilinearMLP` at ``beta = 0``.

    g    = x @ W_gate + b_gate                                   [batch, pos, d_mlp]
    h    = x @ W_in   + b_in                                     [batch, pos, d_mlp]
    gate = phi_beta(g) = (2 - beta) * g * sigmoid(beta * g)      [batch, pos, d_mlp]
    out  = (gate * h) @ W_out + b_out                            [batch, pos, d_model]

``phi_1(g) = g * sigmoid(g) = SiLU(g)`` (the SwiGLU block, bit for bit when ``b_gate = 0``) and
``phi_0(g) = 2 * g * sigmoid(0) = 2 * g * 0.5 = g`` exactly (both factors are powers of two), so at
``beta = 0`` the block computes ``W_out^T((W_gate^T x + b_gate) * (W_in^T x + b_in)) + b_out``, the
:class:`~bilinear_lens.BilinearMLP` formula, and :meth:`AnnealedGateMLP.to_bilinear` copies the
weights unchanged. The factor ``2 - beta`` is the Swish-beta gate of the paper
(``g * sigmoid(beta g)``, whose linear limit is ``g / 2``) with the 1/2 folded back in, so the
block's output scale does not halve during annealing.

Weights use TransformerLens names and layouts (``W_in, W_gate [d_model, d_mlp]``, ``W_out
[d_mlp, d_model]``); with Hugging Face Llama names ``W_gate = gate_proj.weight.T``, ``W_in =
up_proj.weight.T``, ``W_out = down_proj.weight.T``. ``beta`` is a plain float attribute (not a
buffer): the training loop sets it from the schedule at every step, so checkpoints do not need it.
"""

from __future__ import annotations

from typing import Any, Dict, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from bilinear_lens.components.bilinear_mlp import BilinearMLP, GatedLinearUnit


def annealed_gate(g: torch.Tensor, beta: float) -> torch.Tensor:
    """``phi_beta(g) = (2 - beta) * g * sigmoid(beta * g)``: SiLU at 1, the identity at 0."""
    if beta == 1.0:
        return F.silu(g)
    if beta == 0.0:
        return g
    return (2.0 - beta) * g * torch.sigmoid(beta * g)


class AnnealedGateMLP(GatedLinearUnit):
    """``out = W_out^T(phi_beta(W_gate^T x + b_gate) * (W_in^T x + b_in)) + b_out``.

    Shapes: ``x`` ``[..., d_model]`` -> ``[..., d_model]``. Hooks: ``hook_in``, ``hook_pre`` (the
    gate branch ``g``), ``hook_pre_linear`` (``h``), ``hook_post`` (``phi_beta(g) * h``).
    """

    def __init__(self, cfg: Union[Dict, Any], beta: float = 1.0):
        super().__init__(cfg)
        with torch.no_grad():
            for w in (self.W_in, self.W_gate, self.W_out):
                w.zero_()
        self.beta = float(beta)

    def gate(self, pre: torch.Tensor) -> torch.Tensor:
        return annealed_gate(pre, self.beta)

    @classmethod
    def from_gated(cls, mlp: nn.Module, beta: float = 1.0) -> "AnnealedGateMLP":
        """Copy a TransformerLens SiLU ``GatedMLP`` (weights and ``b_out``; ``b_in`` must be 0).

        ``GatedMLP`` adds ``b_in`` to the product rather than to ``h``, which no annealed block
        can express, so a non-zero ``b_in`` is refused.
        """
        if getattr(mlp, "b_in", None) is not None and mlp.b_in.detach().abs().max() > 0:
            raise ValueError("this GatedMLP has a non-zero b_in (added after the product in "
                             "TransformerLens); it cannot be converted exactly. Llama models have none.")
        return cls(mlp.cfg, beta=beta).copy_weights_from(mlp, ("W_in", "W_gate", "W_out", "b_out"))

    def to_bilinear(self) -> BilinearMLP:
        """The exact :class:`BilinearMLP` this block equals at ``beta = 0`` (weights copied)."""
        return BilinearMLP(self.cfg).copy_weights_from(self)

    def extra_repr(self) -> str:
        return f"d_model={self.cfg.d_model}, d_mlp={self.d_mlp}, beta={self.beta:.4g}"


def is_swiglu(mlp: Any) -> bool:
    """True for a TransformerLens gated MLP with a SiLU gate (Llama's SwiGLU)."""
    if isinstance(mlp, (BilinearMLP, AnnealedGateMLP)):
        return False
    cfg = getattr(mlp, "cfg", None)
    return bool(cfg is not None and cfg.gated_mlp and str(cfg.act_fn).lower() in ("silu", "swish")
                and hasattr(mlp, "W_gate"))
