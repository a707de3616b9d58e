"""Certified batched top-k eigenpairs for an atlas: many directions of one layer at once.

For directions ``u_j`` (``[n, d_model]``) we want the ``k`` eigenpairs of largest ``|lambda|`` of
``Q(u_j) = 1/2 (W_in diag(s_j) W_gate^T + transpose)``, ``s_j = W_out u_j``, each *certified*:
its residual computed in the full space satisfies ``||Q v - lambda v|| <= tol |lambda_1|``.

Single-vector thick-restart Lanczos (Wu & Simon 2000), all ``n`` directions in lockstep; step ``j``
applies every ``Q(u_j)`` to its own vector with two GEMMs over the shared weights
(:class:`LayerOperator`: ``[n, d] x [d, 2 d_mlp]`` then ``[n, 2 d_mlp] x [2 d_mlp, d]``).
What differs from :mod:`bilinear_lens.decomposition.lanczos`:

* the matvec outputs ``Q V`` are kept next to the basis ``V`` ``[n, m, d]`` (and carried through
  restarts as ``(Q V) Y``), so a Ritz pair ``x = V y`` has ``Q x = (Q V) y`` exactly: its true
  full-space residual ``||(Q V) y - theta V y||`` costs ``2 m d`` instead of a matvec
  (``4 d d_mlp``). No final refinement pass is needed: ``k`` matvecs per direction saved;
* a direction stops as soon as its top ``k`` true residuals pass ``tol`` (``1e-4``, the atlas's
  certificate; checked after every step from ``k + GUARD`` vectors on) *and* the ``GUARD`` Ritz
  pairs after them have Lanczos estimates ``<= GUARD_TOL`` (see :data:`GUARD`), with a small
  Krylov basis (``m = max(2k + 12, 24)``) and restarts keeping ``p = k + (m - k) / 2`` Ritz vectors;
* a finished direction leaves the batch by moving the last active row into its place (no copy of
  the whole basis), so the GEMMs stay over the active directions only;
* optional start vectors (``start`` ``[n, d]``): a warm start from a basis shared by the layer's
  directions (:mod:`bilinear_lens.atlas.warm`);
* ``block = b > 1`` starts from ``b`` vectors per direction (the start vector and ``b - 1`` seeded
  random ones) and runs band Lanczos: ``Q v_j`` orthogonalised against ``V[:j+b]`` becomes
  ``v_{j+b}``, the Lanczos estimate of a Ritz pair is ``||H[j:j+b, :j] y||``. A single start vector
  can hold almost nothing of one eigenvector of a near-degenerate pair and return its partner and
  the next eigenvalue instead (3 of 4,096 directions of the trained TinyStories layer at k = 16);
  two do so far more rarely (none there), for 17-45% more matvecs.

The basis is orthogonalised twice (CGS2); projected problems are solved in float64. Start vectors
are seeded, so results are deterministic for a given batch. Each eigenvector's largest entry is
made positive. Narrow layers take the dense path instead (:mod:`bilinear_lens.atlas.dense`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.atlas.config import CERTIFY_TOL
from bilinear_lens.decomposition.interaction import output_scales
from bilinear_lens.decomposition.weights import BilinearWeights

__all__ = ["CERTIFY_TOL", "GUARD", "LayerOperator", "TopK", "certified_topk", "default_krylov_dim", "fix_signs"]

CHECK_AFTER = 4
"""First convergence check after ``k + CHECK_AFTER`` Krylov vectors, then every ``CHECK_EVERY``."""
CHECK_EVERY = 1
BLOCK = 1
"""Start vectors per direction (band Lanczos for ``> 1``; see :func:`certified_topk`)."""
GUARD, GUARD_TOL = 4, 1e-3
"""A direction stops only when the ``GUARD`` Ritz pairs after the top ``k`` also have Lanczos
residual estimates ``<= GUARD_TOL |lambda_1|``: certified pairs alone do not prove that no larger
``|lambda|`` is missing, and a space that has resolved the spectrum beyond ``lambda_k`` rarely misses one."""



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


def fix_signs(vectors: Tensor) -> Tensor:
    idx = vectors.abs().argmax(dim=-1, keepdim=True)
    sign = torch.sign(vectors.gather(-1, idx))
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


class LayerOperator:
    """One layer's weights arranged for ``x_j -> Q(u_j) x_j`` over rows ``X`` ``[n, d]``: two GEMMs,
    ``G = X [W_in, W_gate]`` ``[n, 2 d_mlp]``, then ``(s2 * G) 1/2 [W_gate, W_in]^T`` with
    ``s2 = [s, s]``. Row-major operands keep the GEMMs efficient for any ``n`` (the column form of
    :func:`~bilinear_lens.decomposition.interaction.interaction_matvec` slows down 1.5x at some ``n``)."""

    def __init__(self, weights: BilinearWeights):
        self.weights = weights
        self.Wc = torch.cat([weights.W_in, weights.W_gate], 1)  # [d, 2 d_mlp]
        self.Wb = (0.5 * torch.cat([weights.W_gate, weights.W_in], 1)).T.contiguous()  # [2 d_mlp, d]

    def scales(self, directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n two_d_mlp"]:
        s = output_scales(self.weights, directions)
        return torch.cat([s, s], 1)

    def __call__(self, X: Float[Tensor, "n d"], s2: Float[Tensor, "n two_d_mlp"]) -> Float[Tensor, "n d"]:
        """``Q(u_j) x_j`` for each row (``X`` ``[n, b, d]`` with ``s2`` ``[n, 1, 2 d_mlp]`` works too)."""
        return self.backward(X @ self.Wc, s2)

    def backward(self, G: Float[Tensor, "n two_d_mlp"], s2: Float[Tensor, "n two_d_mlp"]) -> Float[Tensor, "n d"]:
        """The second half of the matvec, from ``G = X [W_in, W_gate]`` (overwritten)."""
        return G.mul_(s2) @ self.Wb


class _State:
    """Basis ``V [n, m+b, d]`` (``b`` frontier vectors past the ``m`` with products), outputs
    ``QV [n, m, d]``, projected ``H [n, m+b, m+b]``, scales ``s2`` and output rows ``index`` of the
    active directions."""

    def __init__(self, V: Tensor, QV: Tensor, H: Tensor, s2: Tensor, index: Tensor, b: int):
        self.V, self.QV, self.H, self.s2, self.index, self.b = V, QV, H, s2, index, b

    def select(self, keep: Tensor) -> Tensor:
        """Keep the rows where ``keep``: the last kept rows move into the dropped rows' places, so
        only moved rows are copied (the arrays become leading views). Returns ``order``: new row
        ``i`` was row ``order[i]``."""
        n_new = int(keep.sum())
        order = torch.arange(n_new, device=keep.device)
        holes = (~keep[:n_new]).nonzero().flatten()
        movers = keep[n_new:].nonzero().flatten() + n_new
        names = ("V", "QV", "H", "s2", "index")
        if len(holes):
            order[holes] = movers
            for name in names:
                t = getattr(self, name)
                t[holes] = t[movers]
        for name in names:
            setattr(self, name, getattr(self, name)[:n_new])
        return order


def _step(op: LayerOperator, st: _State, j: int, generator: torch.Generator, q: Optional[Tensor] = None) -> None:
    """One (band) Lanczos step: ``Q v_j`` (``q`` when given), orthogonalised against ``V[:j+b]``,
    becomes ``v_{j+b}`` (full reorthogonalisation, in place)."""
    b, d = st.b, st.V.shape[-1]
    eps = torch.finfo(st.V.dtype).eps
    q = op(st.V[:, j], st.s2) if q is None else q
    st.QV[:, j] = q
    w, h = _orth(q, st.V[:, : j + b])
    h = h.to(torch.float64)
    st.H[:, : j + b, j] = h
    st.H[:, j, : j + b] = h
    beta = w.norm(dim=-1)
    scale = h.abs().amax(-1).to(beta) + beta
    broken = beta <= 100 * eps * math.sqrt(d) * scale.clamp_min(torch.finfo(beta.dtype).tiny)
    if bool(broken.any()):  # exhausted Krylov space: continue with a seeded random vector
        fresh = torch.randn(int(broken.sum()), d, generator=generator, dtype=torch.float64).to(w)
        fresh, _ = _orth(fresh, st.V[broken, : j + b])
        w = w.clone()
        w[broken] = _unit(fresh) * beta[broken].clamp_min(eps).unsqueeze(-1)
        beta = torch.where(broken, torch.zeros_like(beta), beta)
        st.V[:, j + b] = torch.where(broken.unsqueeze(-1), _unit(w), w / beta.clamp_min(eps).unsqueeze(-1))
    else:
        st.V[:, j + b] = w / beta.unsqueeze(-1)
    st.H[:, j + b, j] = beta.to(torch.float64)
    st.H[:, j, j + b] = beta.to(torch.float64)


def certified_topk(
    weights: "BilinearWeights | LayerOperator",
    directions: Float[Tensor, "n d_model"],
    k: int,
    tol: float = CERTIFY_TOL,
    *,
    krylov_dim: Optional[int] = None,
    start: Optional[Float[Tensor, "n d"]] = None,
    start_products: Optional[Float[Tensor, "n d"]] = None,
    scales: Optional[Float[Tensor, "n two_d_mlp"]] = None,
    max_restarts: int = 60,
    seed: int = 0,
    block: int = BLOCK,
) -> TopK:
    """Top-``k`` eigenpairs by ``|lambda|`` of every ``Q(u_j)``, each certified (module docstring).

    ``weights``: ``BilinearWeights`` or a prepared :class:`LayerOperator`; ``start``: one start
    vector per direction (seeded random when ``None``); ``start_products``: ``Q(u_j) start_j`` when
    already known, for unit ``start`` rows (the first step then needs no matvec; see
    :meth:`~bilinear_lens.atlas.warm.WarmStart.with_products`); ``scales``: :meth:`LayerOperator.scales`
    of ``directions`` when already computed (used as scratch); ``block``: start vectors per direction
    (module docstring). Directions that have not converged after ``max_restarts`` keep their best
    Ritz pairs and are flagged in ``converged``; their ``residuals`` say how far they are.
    """
    op = weights if isinstance(weights, LayerOperator) else LayerOperator(weights)
    weights = op.weights
    W = weights.W_in
    dtype, device, d = W.dtype, W.device, weights.d
    n = directions.shape[0]
    if not 1 <= k <= d:
        raise ValueError(f"k={k} is out of range: the interaction matrices are {d} x {d}, so 1 <= k <= {d}.")
    m = default_krylov_dim(k, d) if krylov_dim is None else min(int(krylov_dim), d)
    if m <= k and m < d:
        raise ValueError(f"krylov_dim={krylov_dim} must exceed k={k}.")
    b = max(1, min(int(block), m - k))
    p = max(min(k + GUARD, m - b), min(m - b, k + (m - k) // 2))
    generator = torch.Generator().manual_seed(seed)
    V = torch.empty(n, m + b, d, dtype=dtype, device=device)  # rows are written before they are read
    if start is None or b > 1:
        v0 = torch.randn(n, b, d, generator=generator, dtype=torch.float64).to(V)
    if start is not None:
        v0 = start.to(V).unsqueeze(1) if b == 1 else torch.cat([start.to(V).unsqueeze(1), v0[:, 1:]], 1)
    for i in range(b):  # an orthonormal start block: the start vector, then seeded random ones
        V[:, i] = _unit(_orth(v0[:, i], V[:, :i])[0] if i else v0[:, i])
    st = _State(V, torch.empty(n, m, d, dtype=dtype, device=device),
                torch.zeros(n, m + b, m + b, dtype=torch.float64, device=device),
                op.scales(directions) if scales is None else scales, torch.arange(n, device=device), b)
    out = TopK(torch.zeros(n, k, dtype=dtype, device=device), torch.zeros(n, k, d, dtype=dtype, device=device),
               torch.zeros(n, k, dtype=torch.float64), torch.zeros(n, dtype=torch.long),
               torch.zeros(n, dtype=torch.bool))
    j, first = 0, k + max(CHECK_AFTER, GUARD)
    for cycle in range(max_restarts + 1):
        last = cycle == max_restarts or m >= d
        while j < m and len(st.index):
            _step(op, st, j, generator, start_products.to(V) if start_products is not None and j == 0 else None)
            out.matvecs[st.index.cpu()] += 1
            j += 1
            if j == m or (j >= first and (j - first) % CHECK_EVERY == 0):
                theta, Y = _finish(st, j, k, tol, out, accept_all=last and j == m)
        if not len(st.index):
            break
        _restart(st, theta, Y, p)
        j, first = p, p + b + CHECK_EVERY
    out.vectors = fix_signs(out.vectors)
    out.residuals = out.residuals.to(dtype)
    return out


def _restart(st: _State, theta: Tensor, Y: Tensor, p: int) -> None:
    """Thick restart: the ``p`` best Ritz vectors, their outputs, and the ``b`` frontier vectors."""
    n_act, mb, d = st.V.shape
    b = st.b
    m, dtype, device = mb - b, st.V.dtype, st.V.device
    Yp = Y[:, :, :p]  # [n', m, p] float64
    arrow = torch.bmm(st.H[:, m:, :m], Yp)  # [n', b, p]: coupling of the kept Ritz vectors to the frontier
    V_new = torch.empty(n_act, m + b, d, dtype=dtype, device=device)
    V_new[:, :p] = torch.bmm(Yp.transpose(1, 2).to(dtype), st.V[:, :m])
    V_new[:, p : p + b] = st.V[:, m:]
    QV_new = torch.empty(n_act, m, d, dtype=dtype, device=device)
    QV_new[:, :p] = torch.bmm(Yp.transpose(1, 2).to(dtype), st.QV)
    H = torch.zeros(n_act, m + b, m + b, dtype=torch.float64, device=device)
    ar = torch.arange(p, device=device)
    H[:, ar, ar] = theta[:, :p]
    H[:, p : p + b, :p], H[:, :p, p : p + b] = arrow, arrow.transpose(1, 2)
    st.V, st.QV, st.H = V_new, QV_new, H


def _finish(st: _State, j: int, k: int, tol: float, out: TopK, accept_all: bool) -> tuple:
    """Ritz pairs of the ``j``-vector basis; directions whose top-``k`` true residuals pass ``tol``
    (all of them when ``accept_all``) are written to ``out`` and leave ``st``.

    The Lanczos estimate ``||H[j:j+b, :j] y||`` selects candidates; the certificate is the residual
    ``||(Q V) y - theta V y||`` from the stored matvec outputs. Returns the Ritz pairs of the rest.
    """
    dtype = st.V.dtype
    theta, Y = _ritz(st.H[:, :j, :j])
    scale = theta[:, :1].abs().clamp_min(torch.finfo(dtype).tiny)
    # Lanczos estimates [n, j]: Q V y - theta V y = V[j:j+b] H[j:j+b, :j] y
    ritz_res = torch.bmm(st.H[:, j : j + st.b, :j], Y).norm(dim=1) / scale
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
            idx = st.index[done]
            out.values[idx], out.vectors[idx] = theta[done, :k].to(dtype), X[take]
            out.residuals[idx.cpu()], out.converged[idx.cpu()] = res[take].cpu(), ok[take].cpu()
            order = st.select(~done)
            theta, Y = theta[order], Y[order]
    return theta, Y
