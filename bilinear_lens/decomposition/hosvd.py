"""HOSVD of a bilinear layer: the SVD of its symmetrised tensor flattened to ``(outputs, d*d)``.

For output directions ``D`` (``[n, d_model]``, rows ``u_j``; default the identity, i.e. the full
output space) stack the interaction matrices as rows ``B_D[j] = vec Q(u_j)`` (``[n, d*d]``) and take
its SVD::

    B_D = sum_s sigma_s a_s (x) vec Q_s         a_s in R^n orthonormal, Q_s symmetric, ||Q_s||_F = 1

so that ``u_j . y = sum_s a_s[j] sigma_s x'^T Q_s x'`` for ``y = MLP(x) - b_out``. In the output
space the components are the **output vectors** ``o_s = pinv(D) a_s`` (``= D^T a_s`` for orthonormal
rows, ``= a_s`` for the default identity), and with all components kept::

    sum_s o_s sigma_s x'^T Q_s x' = P_D y           (P_D = pinv(D) D, the projector onto span(D); = y for D = I)

``Q`` is linear in ``u``, so ``Q_s = Q(w_s)`` with ``w_s = D^T a_s / sigma_s``: each component is
the interaction matrix of an ordinary direction and is eigendecomposed by
:func:`~bilinear_lens.eigendecompose` (dense, or implicit top-``eig_k``). ``HOSVD.eigen`` is that
:class:`~bilinear_lens.Eigendecomposition` (its ``directions`` are the ``w_s``), so it can be attached
with :func:`~bilinear_lens.attach_eigenvectors` like any other.

Nothing of size ``n d^2`` is formed: ``a_s`` and ``sigma_s`` come from the ``[n, n]`` Gram matrix
``G = B_D B_D^T = S K S^T`` with ``S = D W_out^T`` ``[n, d_mlp]`` and the neuron Gram matrix
``K_ab = <M_a, M_b>_F = 1/2 ((W_in^T W_in) * (W_gate^T W_gate) + (W_in^T W_gate) * (W_gate^T W_in))_ab``
``[d_mlp, d_mlp]`` of the rank-2 neuron matrices ``M_a = sym(w_in_a w_gate_a^T)``. Cost
``O(d_mlp^2 d + n d_mlp^2 + n^3)`` plus the eigendecompositions of the kept components; memory
``O(d_mlp^2 + n^2)`` (``d_mlp = 2048``: 32 MB in float64; ``5632``: 254 MB). The Gram route squares
the condition number, so it runs in float64 by default; singular values below ``~1e-8 sigma_max``
are then only accurate in absolute terms, while the reconstruction identity holds to machine
precision for any kept set (``sigma_s Q_s = Q(D^T a_s)`` exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.eigen import Eigendecomposition, eigendecompose
from bilinear_lens.decomposition.interaction import as_directions, output_scales
from bilinear_lens.decomposition.weights import BilinearWeights, ModelWithBilinearLayers, bilinear_weights


@dataclass
class HOSVD:
    """Singular components of a bilinear layer's output (module docstring for the formulas).

    ``singular_values``: ``[r]`` descending; ``output_vectors``: ``[r, d_model]`` (``o_s``);
    ``coefficients``: ``[n, r]`` (``a_s`` as columns, in the coordinates of ``directions``);
    ``directions``: ``[n, d_model]`` (``D``); ``eigen``: the eigendecomposition of each ``Q_s``
    (``eigen.values [r, k]``, ``eigen.vectors [r, k, d]``, ``eigen.directions [r, d_model] = w_s``).
    """

    singular_values: Float[Tensor, "r"]
    output_vectors: Float[Tensor, "r d_model"]
    coefficients: Float[Tensor, "n r"]
    directions: Float[Tensor, "n d_model"]
    eigen: Eigendecomposition
    layer: int

    @property
    def r(self) -> int:
        return self.singular_values.shape[0]

    def components(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... r"]:
        """``x'^T Q_s x'`` for each component (MLP inputs ``x``, as recorded by ``hook_in``)."""
        return self.eigen.activations(x).sum(-1)

    def reconstruct(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """``sum_s o_s sigma_s x'^T Q_s x'``: ``P_D (MLP(x) - b_out)`` when all components are kept."""
        return (self.components(x) * self.singular_values.to(self.eigen.values)) @ self.output_vectors.to(
            self.eigen.values)

    def matrices(self) -> Float[Tensor, "r d d"]:
        """The unit-norm interaction matrices ``Q_s`` (rank-``k`` approximations if ``eigen`` is truncated)."""
        return self.eigen.matrices()


def neuron_gram(weights: BilinearWeights) -> Float[Tensor, "d_mlp d_mlp"]:
    """``K_ab = <sym(w_in_a w_gate_a^T), sym(w_in_b w_gate_b^T)>_F`` (``[d_mlp, d_mlp]``)."""
    ii = weights.W_in.T @ weights.W_in
    gg = weights.W_gate.T @ weights.W_gate
    ig = weights.W_in.T @ weights.W_gate
    return 0.5 * (ii * gg + ig * ig.T)


def hosvd(
    model: ModelWithBilinearLayers,
    layer: int,
    directions: Optional[Tensor] = None,
    k: Optional[int] = None,
    eig_k: Optional[int] = None,
    dtype: torch.dtype = torch.float64,
    rtol: Optional[float] = None,
) -> HOSVD:
    """HOSVD of layer ``layer``: ``B_D = sum_s sigma_s a_s (x) Q_s``, each ``Q_s`` eigendecomposed.

    ``directions``: ``[n, d_model]`` output directions (default: identity, the full output space);
    ``k``: keep the top-``k`` singular components (default: all non-zero ones, at most
    ``min(n, d_mlp, d(d+1)/2)``); ``eig_k``: eigenpairs per component (default: full spectrum,
    dense; given: the implicit top-``eig_k`` solver); ``dtype``: working precision (float64 by
    default, see module docstring); ``rtol``: components with ``sigma < rtol * sigma_max`` count
    as zero (default ``n * eps(dtype)``-ish: ``1e-6`` in float64, ``1e-3`` otherwise).
    """
    weights = bilinear_weights(model, layer, dtype=dtype)
    if directions is None:
        directions = torch.eye(weights.d_model, dtype=dtype, device=weights.W_out.device)
    directions = as_directions(directions, weights.d_model).detach().to(weights.W_out)
    n = directions.shape[0]
    if k is not None and not 1 <= k <= n:
        raise ValueError(f"k={k} is out of range: there are {n} output directions, so 1 <= k <= {n}.")
    if rtol is None:
        rtol = 1e-6 if dtype == torch.float64 else 1e-3
    S = output_scales(weights, directions)  # [n, d_mlp]
    G = S @ neuron_gram(weights) @ S.T  # [n, n] = B_D B_D^T
    G = 0.5 * (G + G.T)
    evals, evecs = torch.linalg.eigh(G)
    order = evals.argsort(descending=True)
    sigma = evals[order].clamp_min(0).sqrt()
    A = evecs[:, order]
    keep = sigma > rtol * sigma[0] if len(sigma) and sigma[0] > 0 else torch.zeros_like(sigma, dtype=torch.bool)
    r = int(keep.sum())
    if r == 0:
        raise ValueError(f"layer {weights.layer} has no output along the given directions (B_D = 0).")
    if k is not None:
        r = min(r, k)
    sigma, A = sigma[:r], A[:, :r]
    w = (A / sigma).T @ directions  # [r, d_model]: Q(w_s) = Q_s
    eig = eigendecompose(model, weights.layer, w, k=eig_k, dtype=dtype)
    output_vectors = (torch.linalg.pinv(directions) @ A).T  # [r, d_model]
    return HOSVD(sigma, output_vectors, A, directions, eig, weights.layer)
