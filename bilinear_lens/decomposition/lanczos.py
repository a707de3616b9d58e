"""Implicit top-k eigensolver for interaction matrices: batched thick-restart Lanczos.

For ``n`` output directions ``u_j`` we want the ``k`` eigenpairs of largest ``|lambda|`` of each
``Q(u_j) = 1/2 (W_in diag(s_j) W_gate^T + transpose)``, ``s_j = W_out u_j``, without forming any
``Q`` (``n d^2`` numbers, ``n d^2 d_mlp`` flops) or the third-order tensor. The only access to
``Q`` is the matvec of :func:`~bilinear_lens.decomposition.interaction.interaction_matvec`::

    Q(u_j) x_j = 1/2 (W_in (s_j * (W_gate^T x_j)) + W_gate (s_j * (W_in^T x_j)))   O(d d_mlp)

Algorithm (Lanczos with full reorthogonalisation and thick restart, Wu & Simon 2000):

* all ``n`` directions advance in lockstep: step ``j`` applies every ``Q(u_j)`` to its own
  Krylov vector in one GEMM over the shared weights (``[d, d_mlp] x [d, n]``);
* each new vector is orthogonalised twice against the whole basis (classical Gram-Schmidt, "CGS2"),
  and the projections fill the projected matrix ``H = V^T Q V`` ``[n, m, m]`` (tridiagonal, plus
  an arrow row after a restart);
* after ``m`` steps: Ritz pairs ``H = Y diag(theta) Y^T``, sorted by ``|theta|`` (Lanczos finds both
  ends of the spectrum, so negative eigenvalues are found as well as positive ones). The residual of
  a Ritz pair is ``||Q x_i - theta_i x_i|| = |beta_m Y[m-1, i]|``; a direction is done when its top
  ``k`` residuals are ``<= tol * |theta_max|`` (``tol``: 1e-5 in float32, 1e-10 in float64);
* otherwise restart from the ``p`` best Ritz vectors plus the residual vector (thick restart), so no
  matvec is wasted on rebuilding converged directions; finished directions leave the batch;
* final Rayleigh-Ritz refinement: orthonormalise the ``k`` Ritz vectors ``X``, apply ``Q`` once
  more, diagonalise ``X^T Q X`` ``[k, k]`` and report the true residuals.

Cost: about ``(m + restarts * (m - p) + k)`` matvecs per direction, each ``4 d d_mlp`` multiply-adds,
against ``d^2 d_mlp`` for forming one ``Q`` plus ``~9 d^3`` for its dense ``eigh``. Start vectors
are seeded, so results are deterministic; each eigenvector's largest entry is made positive.
Device- and dtype-agnostic (the small projected problems are solved in float64).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bilinear_lens.decomposition.interaction import interaction_matvec, output_scales
from bilinear_lens.decomposition.weights import BilinearWeights

DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
"""Relative Ritz-residual tolerance ``||Q v - lambda v|| <= tol * |lambda_max|`` per dtype."""

PROGRESS_WORK = 2e9
"""Show a progress bar when ``n * d * d_mlp`` (work of one matvec sweep, in multiply-adds) exceeds this."""


@dataclass
class LanczosInfo:
    """Diagnostics of a :func:`lanczos_topk_info` run.

    ``matvecs``: ``[n]`` matrix-vector products with ``Q(u_j)`` per direction (final refinement
    included); ``restarts``: ``[n]`` thick restarts per direction; ``residuals``: ``[n, k]`` true
    relative residuals ``||Q v_i - lambda_i v_i|| / |lambda_max|`` after refinement; ``converged``:
    ``[n]`` bools; ``krylov_dim``, ``keep``: the ``m`` and ``p`` used; ``tol``.
    """

    matvecs: Tensor
    restarts: Tensor
    residuals: Tensor
    converged: Tensor
    krylov_dim: int
    keep: int
    tol: float


class _Operator:
    """``x -> Q(u_j) x`` for a batch of directions; ``x`` ``[n, b, d]`` (rows), counts matvecs."""

    def __init__(self, weights: BilinearWeights, s: Float[Tensor, "n d_mlp"]):
        self.weights, self.s = weights, s

    def __call__(self, x: Float[Tensor, "n b d"]) -> Float[Tensor, "n b d"]:
        return interaction_matvec(self.weights, self.s, x.transpose(1, 2)).transpose(1, 2)

    def select(self, index: Tensor) -> "_Operator":
        return _Operator(self.weights, self.s[index])


def default_krylov_dim(k: int, d: int) -> int:
    """Krylov dimension ``m``: ``max(2k + 16, 48)`` (enough room to restart), at most ``d``."""
    return min(d, max(2 * k + 16, 48))


def default_keep(k: int, m: int) -> int:
    """Ritz vectors kept at a restart: the ``k`` wanted plus half the rest of the basis."""
    return max(1, min(m - 1, k + (m - k) // 2))


def _random_rows(shape: tuple, generator: torch.Generator, like: Tensor) -> Tensor:
    """Seeded standard-normal rows, drawn on the CPU in float64 so every device gets the same start."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(like)


def _orthogonalise(w: Float[Tensor, "n d"], basis: Float[Tensor, "n j d"]) -> tuple:
    """CGS2: ``w - B^T (B w)`` twice. Returns the new ``w`` and the projections ``B w`` ``[n, j]``."""
    h = torch.einsum("njd,nd->nj", basis, w)
    w = w - torch.einsum("nj,njd->nd", h, basis)
    h2 = torch.einsum("njd,nd->nj", basis, w)
    w = w - torch.einsum("nj,njd->nd", h2, basis)
    return w, h + h2


def _expand(op: _Operator, V: Tensor, H: Tensor, start: int, anorm: Tensor,
            generator: torch.Generator) -> Tensor:
    """Lanczos steps ``start .. m-1`` in place on ``V [n, m+1, d]`` and ``H [n, m, m]`` (float64).

    Returns ``beta_m`` ``[n]``, the coupling of the basis to its residual vector ``V[:, m]``.
    ``anorm`` ``[n]`` (a running estimate of ``||Q||``, updated in place) sets the breakdown
    threshold: when the Krylov space of a direction is exhausted, a random orthogonal vector
    continues it with a zero coupling.
    """
    n, m = H.shape[0], H.shape[-1]
    d = V.shape[-1]
    eps = torch.finfo(V.dtype).eps
    beta = torch.zeros(n, dtype=torch.float64, device=H.device)
    for j in range(start, m):
        w = op(V[:, j : j + 1]).squeeze(1)
        w, h = _orthogonalise(w, V[:, : j + 1])
        h = h.to(torch.float64)
        H[:, : j + 1, j] = h
        H[:, j, : j + 1] = h
        if j + 1 == d:  # the basis spans the whole space: nothing left to couple to
            return torch.zeros(n, dtype=torch.float64, device=H.device)
        norm = w.norm(dim=-1)
        beta = norm.to(torch.float64)
        torch.maximum(anorm, torch.maximum(h.abs().max(-1).values, beta), out=anorm)
        broken = beta <= 100 * eps * math.sqrt(d) * anorm
        if broken.any():  # invariant subspace found: continue with a fresh orthogonal direction
            fresh = _random_rows((int(broken.sum()), d), generator, w)
            fresh, _ = _orthogonalise(fresh, V[broken, : j + 1])
            w[broken] = fresh
            norm = w.norm(dim=-1)
            beta = torch.where(broken, torch.zeros_like(beta), beta)
        V[:, j + 1] = w / norm.unsqueeze(-1)
        if j + 1 < m:
            H[:, j + 1, j] = beta
            H[:, j, j + 1] = beta
    return beta


def _ritz(H: Tensor) -> tuple:
    """Ritz values/vectors of ``H`` ``[n, m, m]`` sorted by ``|theta|`` descending (float64)."""
    theta, Y = torch.linalg.eigh(H)
    order = theta.abs().argsort(dim=-1, descending=True)
    return theta.gather(-1, order), Y.gather(-1, order.unsqueeze(1).expand_as(Y))


def _rayleigh_ritz(op: _Operator, X: Float[Tensor, "n k d"]) -> tuple:
    """Refine ``X``: orthonormalise, diagonalise ``X^T Q X``; returns values, vectors, residual norms."""
    X = torch.linalg.qr(X.transpose(1, 2)).Q.transpose(1, 2)
    QX = op(X)
    G = torch.bmm(X, QX.transpose(1, 2)).to(torch.float64)
    theta, Y = _ritz(0.5 * (G + G.transpose(1, 2)))
    Yt = Y.transpose(1, 2).to(X.dtype)
    X, QX = torch.bmm(Yt, X), torch.bmm(Yt, QX)
    residuals = (QX - theta.to(X.dtype).unsqueeze(-1) * X).norm(dim=-1)
    return theta.to(X.dtype), X, residuals


def _fix_signs(vectors: Float[Tensor, "n k d"]) -> Tensor:
    """Deterministic sign convention: the largest-magnitude entry of each eigenvector is positive."""
    idx = vectors.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(vectors.gather(-1, idx))
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


def lanczos_topk_info(
    weights: BilinearWeights,
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: Optional[float] = None,
    *,
    krylov_dim: Optional[int] = None,
    keep: Optional[int] = None,
    max_restarts: int = 100,
    seed: int = 0,
    progress: Optional[bool] = None,
) -> tuple:
    """Top-``k`` eigenpairs by ``|lambda|`` of every ``Q(u_j)``, plus a :class:`LanczosInfo`.

    ``directions`` ``[n, d_model]``; returns ``values [n, k]`` (sorted by ``|lambda|`` descending),
    ``vectors [n, k, d]`` (unit rows, ``d = weights.d``) and the diagnostics. ``tol``: relative
    residual tolerance (default :data:`DEFAULT_TOL` for the weights' dtype); ``krylov_dim``: basis
    size ``m`` (default :func:`default_krylov_dim`); ``keep``: Ritz vectors kept per restart;
    ``progress``: tqdm bar over finished directions (default: only for large problems).
    """
    W = weights.W_in
    dtype, device, d = W.dtype, W.device, weights.d
    if directions.ndim != 2 or directions.shape[-1] != weights.d_model:
        raise ValueError(f"directions must be [n, d_model={weights.d_model}], got {tuple(directions.shape)}.")
    if not 1 <= k <= d:
        raise ValueError(f"k={k} is out of range: the interaction matrices are {d} x {d}, so 1 <= k <= {d}.")
    tol = DEFAULT_TOL.get(dtype, 1e-5) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}.")
    m = default_krylov_dim(k, d) if krylov_dim is None else min(int(krylov_dim), d)
    if m <= k and m < d:
        raise ValueError(f"krylov_dim={krylov_dim} must exceed k={k} (or equal d={d}).")
    p = default_keep(k, m) if keep is None else int(keep)
    if not k <= p < m and m < d:
        raise ValueError(f"keep={keep} must satisfy k={k} <= keep < krylov_dim={m}.")
    n = directions.shape[0]
    generator = torch.Generator().manual_seed(seed)
    op_all = _Operator(weights, output_scales(weights, directions))
    if progress is None:
        progress = n * d * weights.W_in.shape[1] >= PROGRESS_WORK

    out_X = torch.zeros(n, k, d, dtype=dtype, device=device)
    matvecs = torch.zeros(n, dtype=torch.long)
    restarts = torch.zeros(n, dtype=torch.long)
    converged = torch.zeros(n, dtype=torch.bool)

    active = torch.arange(n)
    op = op_all
    V = torch.zeros(n, m + 1, d, dtype=dtype, device=device)
    start = _random_rows((n, d), generator, V)
    V[:, 0] = start / start.norm(dim=-1, keepdim=True)
    H = torch.zeros(n, m, m, dtype=torch.float64, device=device)
    anorm = torch.zeros(n, dtype=torch.float64, device=device)
    j0 = 0
    bar = tqdm(total=n, desc=f"Lanczos top-{k}", unit="dir", disable=not progress, leave=False)
    for cycle in range(max_restarts + 1):
        beta = _expand(op, V, H, j0, anorm, generator)
        matvecs[active] += m - j0
        theta, Y = _ritz(H)
        res = (beta.unsqueeze(-1) * Y[:, m - 1, :k]).abs()
        scale = theta[:, :1].abs()
        ok = (res <= tol * scale).all(-1) | (scale.squeeze(-1) <= torch.finfo(dtype).tiny)
        done = torch.ones_like(ok) if cycle == max_restarts else ok
        if done.any():
            Yk = Y[done][:, :, :k].transpose(1, 2).to(dtype)
            out_X[active[done.cpu()]] = torch.bmm(Yk, V[done, :m])
            converged[active[done.cpu()]] = ok[done].cpu()
            bar.update(int(done.sum()))
        keep_mask = ~done
        if not keep_mask.any():
            break
        restarts[active[keep_mask.cpu()]] += 1
        # thick restart: p best Ritz vectors + the residual vector, arrow-shaped projected matrix
        sel = keep_mask
        Yp = Y[sel][:, :, :p].transpose(1, 2).to(dtype)
        V_new = torch.zeros(int(sel.sum()), m + 1, d, dtype=dtype, device=device)
        V_new[:, :p] = torch.bmm(Yp, V[sel, :m])
        V_new[:, p] = V[sel, m]
        H = torch.zeros(int(sel.sum()), m, m, dtype=torch.float64, device=device)
        idx = torch.arange(p, device=device)
        H[:, idx, idx] = theta[sel, :p]
        arrow = beta[sel].unsqueeze(-1) * Y[sel][:, m - 1, :p]
        H[:, p, :p] = arrow
        H[:, :p, p] = arrow
        V, anorm, active, j0 = V_new, anorm[sel], active[sel.cpu()], p
        op = op.select(sel)
    bar.close()

    values, vectors, residuals = _rayleigh_ritz(op_all, out_X)
    matvecs += k
    scale = values[:, :1].abs().clamp_min(torch.finfo(dtype).tiny)
    rel = (residuals / scale).cpu()
    if not bool(converged.all()):
        warnings.warn(
            f"lanczos_topk: {int((~converged).sum())} of {n} directions did not converge to tol={tol:g} "
            f"in {max_restarts} restarts (largest relative residual {rel.max():.2e}); raise max_restarts "
            "or krylov_dim, loosen tol, or use method='dense'.",
            RuntimeWarning,
            stacklevel=2,
        )
    info = LanczosInfo(matvecs, restarts, rel, converged, m, p, tol)
    return values, _fix_signs(vectors), info


def lanczos_topk(
    weights: BilinearWeights,
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: Optional[float] = None,
    **kwargs,
) -> tuple:
    """Top-``k`` eigenpairs (by ``|lambda|``) of ``Q(u_j)`` for each row ``u_j`` of ``directions``.

    Implicit: only the matvec ``Q x`` from ``W_in, W_gate, W_out`` is used, batched over the ``n``
    directions. Returns ``values [n, k]`` sorted by ``|lambda|`` descending and ``vectors [n, k, d]``
    (unit rows). ``tol``: relative residual ``||Q v - lambda v|| <= tol * |lambda_max|`` (default
    1e-5 in float32, 1e-10 in float64). Keyword options: see :func:`lanczos_topk_info`.
    """
    values, vectors, _ = lanczos_topk_info(weights, directions, k, tol, **kwargs)
    return values, vectors
