"""Certified batched top-k eigenpairs for an atlas: many directions of one layer at once.

For directions ``u_j`` (``[n, d_model]``) we want the ``k`` eigenpairs of largest ``|lambda|`` of
``Q(u_j) = 1/2 (W_in diag(s_j) W_gate^T + transpose)``, ``s_j = W_out u_j``, each *certified*:
its residual computed in the full space satisfies ``||Q v - lambda v|| <= tol |lambda_1|``.

Single-vector thick-restart Lanczos (Wu & Simon 2000), all ``n`` directions in lockstep; step ``j``
applies every ``Q(u_j)`` to its own vector in one GEMM over the shared weights
(``[d_mlp, d] x [d, n]``, :func:`~bilinear_lens.decomposition.interaction.interaction_matvec`).
What differs from :mod:`bilinear_lens.decomposition.lanczos`:

* the matvec outputs ``Q V`` are kept next to the basis ``V`` ``[n, m, d]`` (and carried through
  restarts as ``(Q V) Y``), so a Ritz pair ``x = V y`` has ``Q x = (Q V) y`` exactly: its true
  full-space residual ``||(Q V) y - theta V y||`` costs ``2 m d`` instead of a matvec
  (``4 d d_mlp``). No final refinement pass is needed: ``k`` matvecs per direction saved;
* a direction stops as soon as its top ``k`` true residuals pass ``tol`` (``1e-4``, the atlas's
  certificate) instead of the decomposition default ``1e-5``, with a small Krylov basis
  (``m = max(2k + 12, 24)``) and restarts keeping ``p = k + (m - k) / 2`` Ritz vectors;
* optional start vectors (``start`` ``[n, d]``): a warm start, e.g. from a shared subspace
  (:func:`subspace_starts`: Rayleigh-Ritz of every ``Q(u_j)`` in one common basis ``S`` ``[r, d]``
  found from already-solved directions, ``S Q S^T = sym(A diag(s) B^T)`` with ``A = S W_in``,
  ``B = S W_gate``: ``r^2 d_mlp`` per direction, no matvec).

The basis is orthogonalised twice (CGS2); projected problems are solved in float64. Start vectors
are seeded, so results are deterministic for a given batch. Each eigenvector's largest entry is
made positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.interaction import interaction_matvec, output_scales
from bilinear_lens.decomposition.weights import BilinearWeights

CHECK_AFTER = 4
"""First convergence check after ``k + CHECK_AFTER`` Krylov vectors, then every ``CHECK_EVERY``."""
CHECK_EVERY = 2
GUARD, GUARD_TOL = 4, 1e-3
"""A direction stops only when the ``GUARD`` Ritz pairs after the top ``k`` also have Lanczos
residual estimates ``<= GUARD_TOL |lambda_1|``: certified pairs alone do not prove that no larger
``|lambda|`` is missing, and a space that has resolved the spectrum beyond ``lambda_k`` rarely misses one."""

CERTIFY_TOL = 1e-4
"""Default certificate: ``||Q v - lambda v|| <= 1e-4 |lambda_1|`` in the full space."""


@dataclass
class TopK:
    """Result of :func:`certified_topk`: ``values [n, k]`` (by ``|lambda|`` descending), ``vectors
    [n, k, d]`` (unit rows), ``residuals [n, k]`` (true ``||Q v - lambda v|| / |lambda_1|``),
    ``matvecs [n]`` and ``converged [n]``."""

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    matvecs: Tensor
    converged: Tensor


def default_krylov_dim(k: int, d: int) -> int:
    """Basis size ``m = max(2k + 12, 24)``, at most ``d``."""
    return min(d, max(2 * k + 12, 24))


def _ritz(H: Tensor) -> tuple:
    theta, Y = torch.linalg.eigh(H)
    order = theta.abs().argsort(dim=-1, descending=True)
    return theta.gather(-1, order), Y.gather(-1, order.unsqueeze(1).expand_as(Y))


def _orth(w: Float[Tensor, "n d"], V: Float[Tensor, "n j d"]) -> tuple:
    """CGS2 of ``w`` against the rows of ``V``; returns the new ``w`` and the projections ``[n, j]``."""
    h = torch.einsum("njd,nd->nj", V, w)
    w = w - torch.einsum("nj,njd->nd", h, V)
    h2 = torch.einsum("njd,nd->nj", V, w)
    return w - torch.einsum("nj,njd->nd", h2, V), h + h2


def _fix_signs(vectors: Tensor) -> Tensor:
    idx = vectors.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(vectors.gather(-1, idx))
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


class _State:
    """Basis ``V [n, m+1, d]``, outputs ``QV [n, m, d]``, projected ``H [n, m, m]`` of active directions."""

    def __init__(self, V: Tensor, QV: Tensor, H: Tensor, s: Tensor, index: Tensor):
        self.V, self.QV, self.H, self.s, self.index = V, QV, H, s, index
        self.beta = torch.zeros(V.shape[0], dtype=torch.float64, device=V.device)

    def select(self, keep: Tensor) -> None:
        self.V, self.QV, self.H = self.V[keep], self.QV[keep], self.H[keep]
        self.s, self.index, self.beta = self.s[keep], self.index[keep.cpu()], self.beta[keep]


def _step(weights: BilinearWeights, st: _State, j: int, generator: torch.Generator) -> None:
    """One Lanczos step at basis index ``j`` (full reorthogonalisation, in place)."""
    m, d = st.H.shape[-1], st.V.shape[-1]
    eps = torch.finfo(st.V.dtype).eps
    q = interaction_matvec(weights, st.s, st.V[:, j].unsqueeze(-1)).squeeze(-1)
    st.QV[:, j] = q
    w, h = _orth(q, st.V[:, : j + 1])
    h = h.to(torch.float64)
    st.H[:, : j + 1, j] = h
    st.H[:, j, : j + 1] = h
    beta = w.norm(dim=-1)
    scale = h.abs().amax(-1).to(beta) + beta
    broken = beta <= 100 * eps * math.sqrt(d) * scale.clamp_min(torch.finfo(beta.dtype).tiny)
    if bool(broken.any()):  # exhausted Krylov space: continue with a seeded random vector
        fresh = torch.randn(int(broken.sum()), d, generator=generator, dtype=torch.float64).to(w)
        fresh, _ = _orth(fresh, st.V[broken, : j + 1])
        w = w.clone()
        w[broken] = _unit(fresh) * beta[broken].clamp_min(eps).unsqueeze(-1)
        beta = torch.where(broken, torch.zeros_like(beta), beta)
        st.V[:, j + 1] = torch.where(broken.unsqueeze(-1), _unit(w), w / beta.clamp_min(eps).unsqueeze(-1))
    else:
        st.V[:, j + 1] = w / beta.unsqueeze(-1)
    st.beta = beta.to(torch.float64)
    if j + 1 < m:
        st.H[:, j + 1, j] = st.beta
        st.H[:, j, j + 1] = st.beta


def certified_topk(
    weights: BilinearWeights,
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: float = CERTIFY_TOL,
    *,
    krylov_dim: Optional[int] = None,
    start: Optional[Float[Tensor, "n d"]] = None,
    max_restarts: int = 60,
    seed: int = 0,
) -> TopK:
    """Top-``k`` eigenpairs by ``|lambda|`` of every ``Q(u_j)``, each certified (module docstring).

    Directions that have not converged after ``max_restarts`` keep their best Ritz pairs and are
    flagged in ``converged``; their ``residuals`` say how far they are.
    """
    W = weights.W_in
    dtype, device, d = W.dtype, W.device, weights.d
    n = directions.shape[0]
    if not 1 <= k <= d:
        raise ValueError(f"k={k} is out of range: the interaction matrices are {d} x {d}, so 1 <= k <= {d}.")
    m = default_krylov_dim(k, d) if krylov_dim is None else min(int(krylov_dim), d)
    if m <= k and m < d:
        raise ValueError(f"krylov_dim={krylov_dim} must exceed k={k}.")
    p = max(min(k + GUARD, m - 1), min(m - 1, k + (m - k) // 2))
    generator = torch.Generator().manual_seed(seed)
    V = torch.zeros(n, m + 1, d, dtype=dtype, device=device)
    v0 = torch.randn(n, d, generator=generator, dtype=torch.float64).to(V) if start is None else start.to(V)
    V[:, 0] = _unit(v0)
    st = _State(V, torch.zeros(n, m, d, dtype=dtype, device=device),
                torch.zeros(n, m, m, dtype=torch.float64, device=device),
                output_scales(weights, directions), torch.arange(n))
    out = TopK(torch.zeros(n, k, dtype=dtype, device=device), torch.zeros(n, k, d, dtype=dtype, device=device),
               torch.zeros(n, k, dtype=torch.float64), torch.zeros(n, dtype=torch.long),
               torch.zeros(n, dtype=torch.bool))
    j, first = 0, k + max(CHECK_AFTER, GUARD)
    for cycle in range(max_restarts + 1):
        last = cycle == max_restarts or m >= d
        while j < m and len(st.index):
            _step(weights, st, j, generator)
            out.matvecs[st.index] += 1
            j += 1
            if j == m or (j >= first and (j - first) % CHECK_EVERY == 0):
                theta, Y = _finish(st, j, k, tol, out, accept_all=last and j == m)
        if not len(st.index):
            break
        # thick restart: p best Ritz vectors, their outputs, and the last Lanczos vector
        Yp = Y[:, :, :p].transpose(1, 2)  # [n', p, m] float64
        arrow = st.beta.unsqueeze(-1) * Yp[:, :, -1]  # coupling of the kept Ritz vectors to v_m
        n_act = len(st.index)
        V_new = torch.zeros(n_act, m + 1, d, dtype=dtype, device=device)
        V_new[:, :p] = torch.bmm(Yp.to(dtype), st.V[:, :m])
        V_new[:, p] = st.V[:, m]
        QV_new = torch.zeros(n_act, m, d, dtype=dtype, device=device)
        QV_new[:, :p] = torch.bmm(Yp.to(dtype), st.QV)
        H = torch.zeros(n_act, m, m, dtype=torch.float64, device=device)
        ar = torch.arange(p, device=device)
        H[:, ar, ar] = theta[:, :p]
        H[:, p, :p], H[:, :p, p] = arrow, arrow
        st.V, st.QV, st.H = V_new, QV_new, H
        j, first = p, p + 1 + CHECK_EVERY
    out.vectors = _fix_signs(out.vectors)
    out.residuals = out.residuals.to(dtype)
    return out


def _finish(st: _State, j: int, k: int, tol: float, out: TopK, accept_all: bool) -> tuple:
    """Ritz pairs of the ``j``-vector basis; directions whose top-``k`` true residuals pass ``tol``
    (all of them when ``accept_all``) are written to ``out`` and leave ``st``.

    The Lanczos estimate ``beta |y_j|`` selects candidates; the certificate is the residual
    ``||(Q V) y - theta V y||`` from the stored matvec outputs. Returns the Ritz pairs of the rest.
    """
    dtype = st.V.dtype
    theta, Y = _ritz(st.H[:, :j, :j])
    scale = theta[:, :1].abs().clamp_min(torch.finfo(dtype).tiny)
    ritz_res = st.beta.unsqueeze(-1) * Y[:, j - 1, :].abs() / scale  # Lanczos estimates [n, j]
    est = ritz_res[:, :k].amax(-1)
    cand = est <= tol
    if GUARD:  # the next GUARD Ritz pairs must be roughly converged too: the space has resolved past lambda_k
        cand &= ritz_res[:, k : k + GUARD].amax(-1) <= GUARD_TOL
    cand = torch.ones_like(cand) if accept_all else cand
    if bool(cand.any()):
        Yk = Y[cand][:, :, :k].transpose(1, 2).to(dtype)  # [c, k, j]
        X = torch.bmm(Yk, st.V[cand, :j])
        R = torch.bmm(Yk, st.QV[cand, :j]) - theta[cand, :k].to(dtype).unsqueeze(-1) * X
        res = R.norm(dim=-1).to(torch.float64) / scale[cand]
        ok = (res <= tol).all(-1) | (theta[cand, 0].abs() <= torch.finfo(dtype).tiny)
        take = ok | accept_all
        done = torch.zeros_like(cand)
        done[cand.nonzero().flatten()[take]] = True
        if bool(take.any()):
            idx = st.index[done.cpu()]
            out.values[idx], out.vectors[idx] = theta[done, :k].to(dtype), X[take]
            out.residuals[idx], out.converged[idx] = res[take].cpu(), ok[take].cpu()
            keep = ~done
            st.select(keep)
            theta, Y = theta[keep], Y[keep]
    return theta, Y


def shared_subspace(vectors: Float[Tensor, "N d"], r: int) -> Float[Tensor, "r d"]:
    """An orthonormal basis ``S`` ``[r, d]`` of the top-``r`` principal directions of ``vectors``."""
    r = min(r, *vectors.shape)
    _, _, Vh = torch.linalg.svd(vectors.to(torch.float64), full_matrices=False)
    return Vh[:r].to(vectors.dtype)


def subspace_starts(weights: BilinearWeights, directions: Float[Tensor, "n d_model"],
                    S: Float[Tensor, "r d"], k: int) -> Float[Tensor, "n d"]:
    """Warm start vectors: the sum of the top-``k`` Ritz vectors of each ``Q(u_j)`` in span(``S``).

    ``S Q(u) S^T = 1/2 (A diag(s) B^T + B diag(s) A^T)`` with ``A = S W_in``, ``B = S W_gate``
    ``[r, d_mlp]``: ``r^2 d_mlp`` per direction, no matvec.
    """
    s = output_scales(weights, directions)
    A, B = S.to(weights.W_in) @ weights.W_in, S.to(weights.W_in) @ weights.W_gate
    half = torch.matmul(A.unsqueeze(0) * s.unsqueeze(1), B.T)  # [n, r, r]
    theta, Y = _ritz((0.5 * (half + half.transpose(1, 2))).to(torch.float64))
    y = Y[:, :, :k].sum(-1).to(S.dtype)  # [n, r]
    return y @ S
