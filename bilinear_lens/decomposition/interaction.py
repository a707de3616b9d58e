"""Interaction matrices of a bilinear layer for output directions.

For an output direction ``u`` (a vector in the MLP's output space, ``[d_model]``)::

    s    = W_out u                                          [d_mlp]
    Q(u) = 1/2 (W_in diag(s) W_gate^T + W_gate diag(s) W_in^T)   [d, d]

so that ``u . (MLP(x) - b_out) = x'^T Q(u) x'`` exactly, with ``x' = x`` (no branch bias,
``d = d_model``) or ``x' = [x, 1]`` (homogeneous coordinates, ``d = d_model + 1``). ``Q`` is the
symmetric part of the third-order tensor ``B_kij = sum_a P_ka W_ai V_aj`` contracted with ``u``.

``interaction_matvec`` applies ``Q(u)`` without forming it: ``Q x = 1/2 (W_in (s * (W_gate^T x)) +
W_gate (s * (W_in^T x)))``, ``O(d * d_mlp)`` per vector; the implicit eigensolvers use it.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.weights import BilinearWeights, ModelWithBilinearLayers, bilinear_weights, require_finite_directions


def as_directions(directions: Tensor, d_model: int) -> Float[Tensor, "n d_model"]:
    """``[d_model]`` or ``[n, d_model]`` -> detached ``[n, d_model]``; a clear error for wrong widths."""
    directions = torch.as_tensor(directions).detach()
    if directions.ndim == 1:
        directions = directions[None]
    if directions.ndim != 2 or directions.shape[-1] != d_model:
        raise ValueError(
            f"directions must have shape [d_model] or [n, d_model] with d_model={d_model} (vectors in "
            f"the MLP's output space), got {tuple(directions.shape)}."
        )
    require_finite_directions(directions)
    return directions


def output_scales(weights: BilinearWeights, directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_mlp"]:
    """``s = W_out u`` for each direction: the per-neuron weight of ``u . MLP(x)``."""
    return directions.to(weights.W_out) @ weights.W_out.T


def interaction_from_weights(
    weights: BilinearWeights, directions: Float[Tensor, "n d_model"]
) -> Float[Tensor, "n d d"]:
    """``Q(u) = 1/2 (W_in diag(W_out u) W_gate^T + transpose)`` for each row ``u`` (dense)."""
    s = output_scales(weights, directions)
    half = torch.einsum("im,nm,jm->nij", weights.W_in, s, weights.W_gate)
    return 0.5 * (half + half.transpose(-1, -2))


def interaction_matvec(
    weights: BilinearWeights, s: Float[Tensor, "n d_mlp"], x: Float[Tensor, "n d b"]
) -> Float[Tensor, "n d b"]:
    """``Q(u_j) x_j`` for every direction ``j`` at once, never forming ``Q``.

    ``x`` holds ``b`` vectors per direction; ``s = W_out u`` from :func:`output_scales`.
    """
    n, d, b = x.shape
    # One GEMM over all n * b vectors against the shared weights (a broadcast matmul would
    # materialise n copies of the weights: ~35x slower at TinyLlama size).
    X = x.permute(1, 0, 2).reshape(d, n * b)  # [d, n*b]
    S = s.T.unsqueeze(-1).expand(-1, n, b).reshape(-1, n * b)  # [d_mlp, n*b]
    g = S * (weights.W_gate.T @ X)  # [d_mlp, n*b]
    h = S * (weights.W_in.T @ X)
    y = 0.5 * (weights.W_in @ g + weights.W_gate @ h)  # [d, n*b]
    return y.reshape(d, n, b).permute(1, 0, 2)


def interaction_matrices(
    model: ModelWithBilinearLayers, layer: int, directions: Tensor, dtype: Optional[torch.dtype] = None
) -> Float[Tensor, "n d d"]:
    """Interaction matrices ``Q(u)`` of ``model``'s bilinear layer ``layer`` for each direction ``u``.

    ``directions``: ``[d_model]`` or ``[n, d_model]`` (output space). Returns ``[n, d, d]`` with
    ``d = d_model``, or ``d_model + 1`` when the layer has non-zero branch biases (input ``[x, 1]``).
    ``b_out`` is not part of ``Q``.
    """
    weights = bilinear_weights(model, layer, dtype=dtype)
    directions = as_directions(directions, weights.d_model).to(weights.W_out)
    return interaction_from_weights(weights, directions)
