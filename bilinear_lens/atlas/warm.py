"""Warm starts for the atlas solver from a basis shared by all directions of a layer.

A basis ``S`` ``[r, d]`` (orthonormal rows) is found once per layer: the top-``r`` principal
directions of the top eigenvectors of a pilot sample of directions (:func:`shared_subspace`).
Every direction's start vector is then the sum of the top ``nk`` Ritz vectors (by ``|theta|``) of
``Q(u)`` in ``span(S)``, from the projected matrix

    M(u) = S Q(u) S^T = 1/2 (A diag(s) B^T + B diag(s) A^T),   A = S W_in, B = S W_gate  [r, d_mlp]

with ``s = W_out u``. ``M`` is linear in ``u``, so its ``r (r + 1) / 2`` distinct entries are one
GEMM over all directions against a tensor found once (:class:`WarmStart`):

    vec M(u) = P s = (P W_out) u,   P[(i, j), a] = 1/2 (A_ia B_ja + B_ia A_ja)   [r (r + 1) / 2, d_mlp]

so a start costs ``r (r + 1) / 2 min(d_model, d_mlp)`` multiply-adds plus an ``r x r`` ``eigh``
per direction (no matvec), against ``r^2 d_mlp`` for forming ``M`` per direction.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.interaction import output_scales
from bilinear_lens.decomposition.weights import BilinearWeights

__all__ = ["ProjectedInteraction", "WarmStart", "shared_subspace", "subspace_starts"]


def shared_subspace(vectors: Float[Tensor, "N d"], r: int) -> Float[Tensor, "r d"]:
    """An orthonormal basis ``S`` ``[r, d]`` of the top-``r`` principal directions of ``vectors``."""
    r = min(r, *vectors.shape)
    _, _, Vh = torch.linalg.svd(vectors.to(torch.float64), full_matrices=False)
    return Vh[:r].to(vectors.dtype)


class ProjectedInteraction:
    """``M(u) = S Q(u) S^T`` ``[n, r, r]`` for many directions from one tensor found once (module
    docstring); ``S = I`` gives ``Q(u)`` itself (the atlas's dense path for narrow layers).

    ``chunk`` rows of ``A`` at a time bound the temporary ``[chunk r, d_mlp]`` when building the
    tensor; the result does not depend on it.
    """

    def __init__(self, weights: BilinearWeights, S: Optional[Float[Tensor, "r d"]] = None, chunk: int = 16):
        self.weights = weights
        self.S = None if S is None else S.to(weights.W_in)
        A, B = (weights.W_in, weights.W_gate) if S is None else (self.S @ weights.W_in, self.S @ weights.W_gate)
        r = A.shape[0]
        self.rows, self.cols = torch.tril_indices(r, r, device=A.device)  # i >= j: eigh reads the lower half
        self.by_u = weights.d_model < weights.W_in.shape[1]  # contract W_out into the tensor when it is cheaper
        parts = []
        for i0 in range(0, r, chunk):
            sel = (self.rows >= i0) & (self.rows < i0 + chunk)
            i, j = self.rows[sel], self.cols[sel]
            P = 0.5 * (A[i] * B[j] + B[i] * A[j])  # [pairs, d_mlp]
            parts.append(P @ weights.W_out if self.by_u else P)
        self.P = torch.cat(parts)  # [r (r + 1) / 2, d_model or d_mlp]
        self.r = r

    @staticmethod
    def nbytes(weights: BilinearWeights, r: int) -> int:
        """Size of the tensor for a basis of ``r`` vectors."""
        return r * (r + 1) // 2 * min(weights.d_model, weights.W_in.shape[1]) * weights.W_in.element_size()

    def projected(self, directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n r r"]:
        """``M(u)`` for each direction, lower triangle filled (``eigh`` reads only it)."""
        x = directions.to(self.P) if self.by_u else output_scales(self.weights, directions)
        vec = x @ self.P.T  # [n, pairs]
        M = torch.zeros(x.shape[0], self.r, self.r, dtype=vec.dtype, device=vec.device)
        M[:, self.rows, self.cols] = vec
        return M


class WarmStart(ProjectedInteraction):
    """Start vectors from a shared basis ``S`` ``[r, d]`` (module docstring)."""

    def __init__(self, weights: BilinearWeights, S: Float[Tensor, "r d"], chunk: int = 16):
        super().__init__(weights, S, chunk)
        self._SWc: Optional[Tensor] = None

    def coefficients(self, directions: Float[Tensor, "n d_model"], nk: int) -> Float[Tensor, "n r"]:
        """``y`` (unit rows): the sum of each direction's top-``nk`` Ritz vectors, in the basis ``S``."""
        theta, Y = torch.linalg.eigh(self.projected(directions))
        top = theta.abs().topk(min(nk, self.r), dim=-1).indices  # [n, nk]
        y = Y.gather(-1, top.unsqueeze(1).expand(-1, self.r, -1)).sum(-1)  # [n, r]
        return y / y.norm(dim=-1, keepdim=True)

    def __call__(self, directions: Float[Tensor, "n d_model"], nk: int) -> Float[Tensor, "n d"]:
        """Start vectors: the sum of each direction's top-``nk`` Ritz vectors in ``span(S)``."""
        return self.coefficients(directions, nk) @ self.S

    def with_products(self, op: Any, directions: Float[Tensor, "n d_model"], nk: int,
                      scales: Optional[Tensor] = None) -> tuple:
        """Unit start vectors ``x = y S`` and their products ``Q(u) x``: the first GEMM of the matvec
        is ``y (S [W_in, W_gate])`` (``r``, not ``d``, rows of work per direction), so the first
        product costs about half a matvec. ``op``: the layer's
        :class:`~bilinear_lens.atlas.solve.LayerOperator`; ``scales``: its ``scales(directions)``
        when already computed."""
        if self._SWc is None:
            self._SWc = self.S @ op.Wc  # [r, 2 d_mlp]
        y = self.coefficients(directions, nk)
        x = y @ self.S
        norm = x.norm(dim=-1, keepdim=True)
        Qx = op.backward(y @ self._SWc, op.scales(directions) if scales is None else scales)
        return x / norm, Qx / norm


def subspace_starts(weights: BilinearWeights, directions: Float[Tensor, "n d_model"],
                    S: Float[Tensor, "r d"], k: int, warm: Optional[WarmStart] = None) -> Float[Tensor, "n d"]:
    """Warm start vectors: the sum of the top-``k`` Ritz vectors of each ``Q(u_j)`` in span(``S``)."""
    return (warm or WarmStart(weights, S))(directions, k)
