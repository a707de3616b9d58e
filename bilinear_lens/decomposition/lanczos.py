"""Implicit top-k eigensolver for interaction matrices: batched block thick-restart Lanczos.

For ``n`` output directions ``u_j`` we want the ``k`` eigenpairs of largest ``|lambda|`` of each
``Q(u_j) = 1/2 (W_in diag(s_j) W_gate^T + transpose)``, ``s_j = W_out u_j``, without forming any
``Q`` (``n d^2`` numbers, ``n d^2 d_mlp`` flops) or the third-order tensor. The only access to
``Q`` is the matvec of :func:`~bilinear_lens.decomposition.interaction.interaction_matvec`::

    Q(u_j) x_j = 1/2 (W_in (s_j * (W_gate^T x_j)) + W_gate (s_j * (W_in^T x_j)))   O(d d_mlp)

Algorithm (block Lanczos with full reorthogonalisation and thick restart, Wu & Simon 2000):

* all ``n`` directions advance in lockstep, ``b`` Krylov vectors per direction and step
  (``b = 4`` for up to 32 directions, 1 from 128 on: :func:`default_block_size`): step ``j`` applies
  every ``Q(u_j)`` to its own block in one GEMM over the shared weights (``[d, d_mlp] x [d, n b]``).
  Wider GEMMs read the weights fewer times per vector; at TinyLlama size, ``b = 4`` needs 105 matvecs
  per direction instead of 68 for ``b = 1`` but 2.1x less CPU time (``benchmarks/decompose.py``);
* each new block is orthogonalised twice against the whole basis (classical Gram-Schmidt, "CGS2")
  and QR-orthonormalised; the projections fill the projected matrix ``H = V^T Q V`` ``[n, m, m]``
  (block tridiagonal, plus an arrow after a restart);
* after the basis reaches ``m`` vectors: Ritz pairs ``H = Y diag(theta) Y^T``, sorted by ``|theta|``
  (Lanczos converges at both ends of the spectrum, so negative eigenvalues are found like positive
  ones). The residual of a Ritz pair is ``||Q x_i - theta_i x_i|| = ||R_m Y[m-b:m, i]||`` (``R_m``:
  coupling to the residual block); a direction is done when its top ``k`` residuals are
  ``<= tol * |theta_max|`` (``tol``: 1e-5 in float32, 1e-10 in float64);
* otherwise restart from the ``p`` best Ritz vectors plus the residual block (thick restart), so no
  matvec is spent rebuilding what has converged; finished directions leave the batch;
* final Rayleigh-Ritz refinement: orthonormalise the ``k`` Ritz vectors ``X``, apply ``Q`` once
  more, diagonalise ``X^T Q X`` ``[k, k]`` and report the true residuals.

Cost: about ``m + restarts * (m - p) + k`` matvecs per direction, each ``4 d d_mlp`` multiply-adds,
against ``d^2 d_mlp`` for forming one ``Q`` plus ``~9 d^3`` for its dense ``eigh``. Start vectors
are seeded, so results are deterministic; each eigenvector's largest entry is made positive.
Device- and dtype-agnostic (the small projected problems are solved in float64). An exhausted
Krylov space (low-rank ``Q``) continues with seeded random vectors orthogonal to the basis.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bilinear_lens.decomposition.interaction import interaction_matvec, output_scales
from bilinear_lens.decomposition.weights import BilinearWeights

DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
"""Relative Ritz-residual tolerance ``||Q v - lambda v|| <= tol * |lambda_max|`` per dtype."""

PROGRESS_WORK = 1e8
"""Show a progress bar when ``n * d * d_mlp`` (work of one matvec sweep, in multiply-adds) exceeds this."""


@dataclass
class LanczosInfo:
    """Diagnostics of a :func:`lanczos_topk_info` run.

    ``matvecs``: ``[n]`` matrix-vector products with ``Q(u_j)`` per direction (final refinement
    included); ``restarts``: ``[n]`` thick restarts per direction; ``residuals``: ``[n, k]`` true
    relative residuals ``||Q v_i - lambda_i v_i|| / |lambda_max|`` after refinement; ``converged``:
    ``[n]`` bools; ``krylov_dim``, ``keep``, ``block_size``: the ``m``, ``p`` and ``b`` used; ``tol``.
    """

    matvecs: Tensor
    restarts: Tensor
    residuals: Tensor
    converged: Tensor
    krylov_dim: int
    keep: int
    block_size: int
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


def default_block_size(n: int) -> int:
    """Block size ``b``: enough vectors per step (``n b >= 128``) for an efficient GEMM, at most 4."""
    return max(1, min(4, 128 // max(n, 1)))


def _random_rows(shape: tuple, generator: torch.Generator, like: Tensor) -> Tensor:
    """Seeded standard-normal rows, drawn on the CPU in float64 so every device gets the same start."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(like)


def _orthogonalise(W: Float[Tensor, "n b d"], basis: Float[Tensor, "n j d"]) -> tuple:
    """CGS2: ``W - (W B^T) B`` twice. Returns the new ``W`` and the projections ``B W^T`` ``[n, j, b]``."""
    h = torch.einsum("njd,nbd->njb", basis, W)
    W = W - torch.einsum("njb,njd->nbd", h, basis)
    h2 = torch.einsum("njd,nbd->njb", basis, W)
    W = W - torch.einsum("njb,njd->nbd", h2, basis)
    return W, h + h2


def _repair_block(W: Float[Tensor, "b d"], basis: Float[Tensor, "j d"], thresh: float,
                  generator: torch.Generator) -> Tensor:
    """Orthonormal next block for one direction whose block ``W`` is (nearly) rank-deficient.

    Keeps the numerically independent part of ``W`` (eigen-decomposition of its Gram matrix) and fills
    the rest with seeded random vectors, all orthogonalised against ``basis`` (an exhausted Krylov space).
    """
    b = W.shape[0]
    sigma, U = torch.linalg.eigh((W @ W.T).to(torch.float64))
    keep = sigma > thresh**2
    kept = (U[:, keep].T.to(W) @ W) / sigma[keep].sqrt().to(W).unsqueeze(-1)
    fresh = _random_rows((b - int(keep.sum()), W.shape[1]), generator, W)
    block = torch.cat([kept, fresh]).unsqueeze(0)
    block, _ = _orthogonalise(block, basis.unsqueeze(0))
    return torch.linalg.qr(block[0].T).Q.T


def _expand(op: _Operator, V: Tensor, H: Tensor, start: int, anorm: Tensor,
            generator: torch.Generator, b: int) -> Tensor:
    """Block Lanczos steps from basis index ``start`` to ``m``, in place on ``V [n, m+b, d]``, ``H [n, m, m]``.

    Each step applies ``Q`` to the last block ``V_j`` (``b`` vectors per direction, one GEMM for all
    directions), orthogonalises against the whole basis (the projections are the new columns of
    ``H = V^T Q V``, float64), and orthonormalises the rest into the next block:
    ``W = R^T V_{j+1}`` with coupling ``R = V_{j+1} W^T`` ``[n, b, b]``. Returns the coupling ``R_m``
    of the basis to its residual block ``V[:, m:m+b]``. ``anorm`` ``[n]`` (a running estimate of
    ``||Q||``, updated in place) sets the breakdown threshold: when a Krylov space is exhausted it
    continues with seeded random orthogonal vectors.
    """
    n, m = H.shape[0], H.shape[-1]
    d = V.shape[-1]
    eps = torch.finfo(V.dtype).eps
    R = torch.zeros(n, b, b, dtype=torch.float64, device=H.device)
    for j in range(start, m, b):
        W, h = _orthogonalise(op(V[:, j : j + b]), V[:, : j + b])
        h = h.to(torch.float64)
        H[:, : j + b, j : j + b] = h
        H[:, j : j + b, : j + b] = h.transpose(1, 2)
        if j + b >= d:  # the basis spans the whole space: nothing left to couple to
            return torch.zeros_like(R)
        Vn, Rq = torch.linalg.qr(W.transpose(1, 2))
        Vn = Vn.transpose(1, 2)
        diag = Rq.diagonal(dim1=1, dim2=2).abs().to(torch.float64)
        torch.maximum(anorm, torch.maximum(h.abs().amax((1, 2)), diag.amax(-1)), out=anorm)
        thresh = 100 * eps * math.sqrt(d) * anorm
        broken = (diag <= thresh.unsqueeze(-1)).any(-1)
        for i in broken.nonzero().flatten().tolist():  # rare: exhausted Krylov space
            Vn[i] = _repair_block(W[i], V[i, : j + b], float(thresh[i]), generator)
        R = torch.bmm(Vn, W.transpose(1, 2)).to(torch.float64)
        V[:, j + b : j + 2 * b] = Vn
        if j + b < m:
            H[:, j + b : j + 2 * b, j : j + b] = R
            H[:, j : j + b, j + b : j + 2 * b] = R.transpose(1, 2)
    return R


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


def _sizes(weights: BilinearWeights, directions: Tensor, k: int, tol: Optional[float], krylov_dim: Optional[int],
           keep: Optional[int], block_size: Optional[int]) -> Tuple[float, int, int, int]:
    """``(tol, m, b, p)``: tolerance, Krylov basis size, block size and Ritz vectors kept per restart, checked
    against the problem (one-line ``ValueError`` naming the setting)."""
    dtype, d = weights.W_in.dtype, weights.d
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
    if keep is not None and not k <= keep < m:
        raise ValueError(f"keep={keep} must satisfy k={k} <= keep < krylov_dim={m}.")
    b = default_block_size(directions.shape[0]) if block_size is None else int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    m = -(-m // b) * b  # a whole number of blocks
    if m >= d:  # the Krylov basis spans the whole space: plain Lanczos, one cycle
        m, b = d, 1
    p = default_keep(k, m) if keep is None else int(keep)
    p = min(m - b, m - (-(-(m - p) // b)) * b)  # restarts expand by whole blocks
    if m < d and not k <= p:
        raise ValueError(f"krylov_dim={m} leaves no room to restart with k={k} and block_size={b}.")
    return tol, m, b, p


def _thick_restart(V: Tensor, R: Tensor, Y: Tensor, theta: Tensor, m: int, p: int, b: int) -> Tuple[Tensor, Tensor]:
    """The restarted basis ``[n, m + b, d]`` (the ``p`` best Ritz vectors, then the residual block) and its
    arrow-shaped projected matrix ``[n, m, m]`` (Ritz values on the diagonal, residual couplings in the arrow)."""
    n, d = V.shape[0], V.shape[2]
    V_new = torch.zeros(n, m + b, d, dtype=V.dtype, device=V.device)
    V_new[:, :p] = torch.bmm(Y[:, :, :p].transpose(1, 2).to(V.dtype), V[:, :m])
    V_new[:, p : p + b] = V[:, m : m + b]
    H = torch.zeros(n, m, m, dtype=torch.float64, device=V.device)
    idx = torch.arange(p, device=V.device)
    H[:, idx, idx] = theta[:, :p]
    arrow = torch.bmm(R, Y[:, m - b :, :p])  # [n, b, p]
    H[:, p : p + b, :p] = arrow
    H[:, :p, p : p + b] = arrow.transpose(1, 2)
    return V_new, H


def lanczos_topk_info(
    weights: BilinearWeights,
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: Optional[float] = None,
    *,
    krylov_dim: Optional[int] = None,
    keep: Optional[int] = None,
    block_size: Optional[int] = None,
    max_restarts: int = 100,
    seed: int = 0,
    progress: Optional[bool] = None,
) -> tuple:
    """Top-``k`` eigenpairs by ``|lambda|`` of every ``Q(u_j)``, plus a :class:`LanczosInfo`.

    ``directions`` ``[n, d_model]``; returns ``values [n, k]`` (sorted by ``|lambda|`` descending),
    ``vectors [n, k, d]`` (unit rows, ``d = weights.d``) and the diagnostics. ``tol``: relative
    residual tolerance (default :data:`DEFAULT_TOL` for the weights' dtype); ``krylov_dim``: basis
    size ``m`` (default :func:`default_krylov_dim`); ``keep``: Ritz vectors kept per restart;
    ``block_size``: Krylov vectors added per step and direction (default :func:`default_block_size`);
    ``progress``: tqdm bar over finished directions (default: only for large problems).
    """
    W = weights.W_in
    dtype, device, d = W.dtype, W.device, weights.d
    n = directions.shape[0]
    tol, m, b, p = _sizes(weights, directions, k, tol, krylov_dim, keep, block_size)
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
    V = torch.zeros(n, m + b, d, dtype=dtype, device=device)
    start = _random_rows((n, d, b), generator, V)
    V[:, :b] = torch.linalg.qr(start).Q.transpose(1, 2)
    H = torch.zeros(n, m, m, dtype=torch.float64, device=device)
    anorm = torch.zeros(n, dtype=torch.float64, device=device)
    j0 = 0
    bar = tqdm(total=n, desc=f"Lanczos top-{k}", unit="dir", disable=not progress, leave=False)
    for cycle in range(max_restarts + 1):
        R = _expand(op, V, H, j0, anorm, generator, b)
        matvecs[active] += m - j0
        theta, Y = _ritz(H)
        res = torch.bmm(R, Y[:, m - b :, :k]).norm(dim=1)  # ||Q x_i - theta_i x_i|| [n, k]
        scale = theta[:, :1].abs()
        ok = (res <= tol * scale).all(-1) | (scale.squeeze(-1) <= torch.finfo(dtype).tiny)
        done = torch.ones_like(ok) if cycle == max_restarts else ok
        if done.any():
            Yk = Y[done][:, :, :k].transpose(1, 2).to(dtype)
            out_X[active[done.cpu()]] = torch.bmm(Yk, V[done, :m])
            converged[active[done.cpu()]] = ok[done].cpu()
            bar.update(int(done.sum()))
        sel = ~done
        if not sel.any():
            break
        restarts[active[sel.cpu()]] += 1
        V, H = _thick_restart(V[sel], R[sel], Y[sel], theta[sel], m, p, b)
        anorm, active, j0 = anorm[sel], active[sel.cpu()], p
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
    info = LanczosInfo(matvecs, restarts, rel, converged, m, p, b, tol)
    return values, _fix_signs(vectors), info


def lanczos_topk(
    weights: BilinearWeights,
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: Optional[float] = None,
    **kwargs,
) -> tuple:
    """Top-``k`` eigenpairs (by ``|lambda|``) of ``Q(u_j)`` for each row ``u_j`` of ``directions``.

    Implicit (block Lanczos): only the matvec ``Q x`` from ``W_in, W_gate, W_out`` is used, batched
    over the ``n`` directions. Returns ``values [n, k]`` sorted by ``|lambda|`` descending and ``vectors [n, k, d]``
    (unit rows). ``tol``: relative residual ``||Q v - lambda v|| <= tol * |lambda_max|`` (default
    1e-5 in float32, 1e-10 in float64). Keyword options: see :func:`lanczos_topk_info`.
    """
    values, vectors, _ = lanczos_topk_info(weights, directions, k, tol, **kwargs)
    return values, vectors
