"""The atlas's dense path for narrow layers: form every ``Q(u)``, ``eigh``, certify.

For small ``d`` (the trained layers here have ``d_model`` 64-128) a dense ``eigh`` of the
``[d, d]`` matrix costs less than the Krylov solver's matvecs and per-step overhead. ``Q(u)`` is
linear in ``u``, so its ``d (d + 1) / 2`` distinct entries are one GEMM over all directions against
a tensor found once (:class:`~bilinear_lens.atlas.warm.ProjectedInteraction` with ``S = I``:
``d (d + 1) / 2 min(d_model, d_mlp)`` multiply-adds per direction instead of ``d^2 d_mlp`` for
``W_in diag(s) W_gate^T``). Then, per direction:

    theta, Y = eigh(Q(u))                 all d eigenpairs (LAPACK, the weights' dtype)
    top k by |theta|                      values [n, k], vectors [n, k, d]
    r_i = ||Q v_i - theta_i v_i|| / |theta_1|   with Q v from the weights (LayerOperator), not from
                                          the formed matrix: the same certificate as the Krylov path

so every pair carries the same full-space residual certificate (``matvecs`` records the ``k``
certificate products). Nothing can be missed: all eigenvalues are computed.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.atlas.solve import CERTIFY_TOL, LayerOperator, TopK, fix_signs
from bilinear_lens.atlas.warm import ProjectedInteraction
from bilinear_lens.decomposition.interaction import interaction_from_weights

__all__ = ["DENSE_TENSOR_BYTES", "dense_forms", "dense_topk"]

DENSE_TENSOR_BYTES = 256 * 2**20
"""Largest tensor ``[d (d + 1) / 2, min(d_model, d_mlp)]`` built for the dense path; above it each
``Q(u)`` is formed directly (``W_in diag(s) W_gate^T``)."""


def dense_forms(weights) -> Optional[ProjectedInteraction]:
    """The tensor that forms ``Q(u)`` by one GEMM, or ``None`` when it would exceed :data:`DENSE_TENSOR_BYTES`."""
    if ProjectedInteraction.nbytes(weights, weights.d) > DENSE_TENSOR_BYTES:
        return None
    return ProjectedInteraction(weights)


def dense_topk(
    weights: "LayerOperator",
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: float = CERTIFY_TOL,
    *,
    forms: Optional[ProjectedInteraction] = None,
) -> TopK:
    """Top-``k`` eigenpairs by ``|lambda|`` of every ``Q(u_j)`` from dense ``eigh``, certified like
    :func:`~bilinear_lens.atlas.solve.certified_topk` (module docstring).

    ``weights``: a :class:`~bilinear_lens.atlas.solve.LayerOperator` or ``BilinearWeights``;
    ``forms``: a prepared :func:`dense_forms` (built here when not given).
    """
    op = weights if isinstance(weights, LayerOperator) else LayerOperator(weights)
    w = op.weights
    d, n = w.d, directions.shape[0]
    if not 1 <= k <= d:
        raise ValueError(f"k={k} is out of range: the interaction matrices are {d} x {d}, so 1 <= k <= {d}.")
    directions = directions.to(w.W_in)
    forms = forms if forms is not None else dense_forms(w)
    Q = forms.projected(directions) if forms is not None else torch.tril(interaction_from_weights(w, directions))
    theta, Y = torch.linalg.eigh(Q)  # reads the lower triangle
    top = theta.abs().argsort(dim=-1, descending=True, stable=True)[:, :k]
    values = theta.gather(-1, top)
    vectors = Y.gather(-1, top.unsqueeze(1).expand(-1, d, -1)).transpose(1, 2).contiguous()  # [n, k, d]
    Qv = op(vectors, op.scales(directions).unsqueeze(1))  # [n, k, d]
    scale = values[:, :1].abs().clamp_min(torch.finfo(values.dtype).tiny)
    res = ((Qv - values.unsqueeze(-1) * vectors).norm(dim=-1) / scale).to(torch.float64)
    ok = (res <= tol).all(-1) | (values[:, 0].abs() <= torch.finfo(values.dtype).tiny)
    return TopK(values, fix_signs(vectors), res.to(values.dtype).cpu(), torch.full((n,), k, dtype=torch.long),
                ok.cpu())
