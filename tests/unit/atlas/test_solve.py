"""The atlas's solver paths against dense eigh written here: the dense path, single-vector and band
Lanczos (cold and warm-started), the projected tensor behind warm starts, and the automatic choice."""

from __future__ import annotations

import pytest
import torch

from bilinear_lens.atlas import LayerSolver, certified_topk, choose_solver, dense_topk
from bilinear_lens.atlas.auto import DENSE_FACTOR
from bilinear_lens.atlas.solve import LayerOperator
from bilinear_lens.atlas.warm import ProjectedInteraction, WarmStart, shared_subspace
from bilinear_lens.decomposition.weights import BilinearWeights


def _weights(d: int, dm: int, seed: int = 0, dtype=torch.float64) -> BilinearWeights:
    g = torch.Generator().manual_seed(seed)
    W_in, W_gate = torch.randn(d, dm, generator=g, dtype=dtype), torch.randn(d, dm, generator=g, dtype=dtype)
    W_out = torch.randn(dm, d, generator=g, dtype=dtype) / dm**0.5
    return BilinearWeights(W_in / d**0.5, W_gate / d**0.5, W_out, torch.zeros(d, dtype=dtype), False, 0, None)


def _Q(w: BilinearWeights, U: torch.Tensor) -> torch.Tensor:
    """``Q(u)`` formed here, elementwise from the definition, in float64."""
    s = U.double() @ w.W_out.double().T  # [n, d_mlp]
    half = torch.einsum("ia,na,ja->nij", w.W_in.double(), s, w.W_gate.double())
    return 0.5 * (half + half.transpose(1, 2))


def _top(Q: torch.Tensor, k: int) -> tuple:
    e, v = torch.linalg.eigh(Q)
    order = e.abs().argsort(-1, descending=True)[:, :k]
    return e.gather(-1, order), v.gather(-1, order.unsqueeze(1).expand(-1, Q.shape[-1], -1)).transpose(1, 2)


def _separated(e_all: torch.Tensor, k: int) -> torch.Tensor:
    """[n, k] mask: |lambda_i| more than 1e-2 |lambda_1| from both neighbours in the |lambda| order."""
    a = e_all.abs()
    gap = (a[:, :-1] - a[:, 1:]) / a[:, :1]
    left = torch.cat([torch.ones_like(gap[:, :1]), gap[:, : k - 1]], 1)
    return torch.minimum(left, gap[:, :k]) > 1e-2


def _check(res, Q: torch.Tensor, k: int, tol: float, rtol: float) -> None:
    e, v = _top(Q, Q.shape[-1])
    assert torch.allclose(res.values.double(), e[:, :k], rtol=rtol, atol=0)
    sep = _separated(e, k)
    assert sep.sum() > sep.numel() // 2  # the vector check is not vacuous
    cos = (res.vectors.double() * v[:, :k]).sum(-1).abs()
    assert cos[sep].min() > 1 - 1e-6
    V = res.vectors.double()  # certificates, recomputed from the formed matrix
    r = (torch.einsum("nij,nkj->nki", Q, V) - res.values.double().unsqueeze(-1) * V).norm(dim=-1)
    assert (r / e[:, :1].abs()).max() <= tol * 1.01 and bool(res.converged.all())
    assert torch.allclose(r / e[:, :1].abs(), res.residuals.double(), rtol=1e-3, atol=1e-12)


def test_dense_path_equals_dense_eigh_with_certificates():
    w = _weights(24, 40)
    U = torch.randn(30, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = dense_topk(w, U, 6)
    _check(res, _Q(w, U), 6, 1e-12, 1e-10)
    assert torch.equal(res.matvecs, torch.full((30,), 6))  # the certificate's products
    # the largest entry of each vector is positive (the atlas's sign convention)
    v = res.vectors
    assert bool((v.gather(-1, v.abs().argmax(-1, keepdim=True)) > 0).all())
    with pytest.raises(ValueError, match="out of range"):
        dense_topk(w, U, 25)


@pytest.mark.parametrize("block", [1, 2])
def test_lanczos_paths_equal_dense_eigh(block):
    w = _weights(48, 96, seed=2)
    U = torch.randn(40, 48, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    Q = _Q(w, U)
    res = certified_topk(w, U, 5, tol=1e-9, block=block)
    _check(res, Q, 5, 1e-9, 1e-8)
    dense = dense_topk(w, U, 5)
    assert torch.allclose(res.values, dense.values, rtol=1e-8, atol=0)
    # warm-started from a shared basis found from other directions: the same pairs
    pilot = certified_topk(w, torch.randn(16, 48, generator=torch.Generator().manual_seed(4), dtype=torch.float64), 9)
    S = shared_subspace(pilot.vectors.reshape(-1, 48), 12)
    warm = LayerSolver(w, 5, 1e-9, "lanczos", S=S, block=block)(U, seed=0)
    _check(warm, Q, 5, 1e-9, 1e-8)


def test_band_lanczos_finds_both_members_of_a_degenerate_pair():
    # W_in = W_gate = W_out = I: Q(u) = diag(u), eigenvalues exactly the entries of u
    d = 40
    I = torch.eye(d, dtype=torch.float64)
    w = BilinearWeights(I, I, I, torch.zeros(d, dtype=torch.float64), False, 0, None)
    rest = torch.linspace(-1, 1, d - 8, dtype=torch.float64)
    u = torch.cat([torch.tensor([5.0, 4.0, 3.0, 3.0, 2.0, 1.8, 1.6, 1.4], dtype=torch.float64), rest])[None]
    one = certified_topk(w, u, 4, tol=1e-9, block=1)
    two = certified_topk(w, u, 4, tol=1e-9, block=2)
    # one start vector spans a single direction of the eigenspace of 3: certified pairs, but not the top 4
    assert one.residuals.max() <= 1e-9 and one.values[0].tolist() == pytest.approx([5.0, 4.0, 3.0, 2.0])
    assert two.residuals.max() <= 1e-9 and two.values[0].tolist() == pytest.approx([5.0, 4.0, 3.0, 3.0])
    assert abs(float(two.vectors[0, 2] @ two.vectors[0, 3])) < 1e-8  # two orthogonal vectors for lambda = 3


def test_projected_tensor_is_S_Q_S_transposed():
    for d, dm in ((20, 30), (30, 20)):  # W_out contracted into the tensor (d_model < d_mlp), or not
        w = _weights(d, dm, seed=5)
        U = torch.randn(7, d, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        S = torch.linalg.qr(torch.randn(d, 9, generator=torch.Generator().manual_seed(7), dtype=torch.float64)).Q.T
        M = ProjectedInteraction(w, S, chunk=4).projected(U)
        assert torch.allclose(M, torch.tril(S @ _Q(w, U) @ S.T), rtol=1e-10, atol=1e-12)
        assert torch.allclose(ProjectedInteraction(w).projected(U), torch.tril(_Q(w, U)), rtol=1e-10, atol=1e-12)
        # the start vector: the (normalised) sum of the top-3 Ritz vectors in span(S); with_products
        # also returns Q(u) x, its first GEMM done in span(S)
        ws = WarmStart(w, S)
        x = ws(U, 3)
        assert torch.allclose(x @ S.T @ S, x, atol=1e-10)
        assert torch.allclose(x.norm(dim=-1), torch.ones(7, dtype=x.dtype))
        e, Y = torch.linalg.eigh(S @ _Q(w, U) @ S.T)
        top = e.abs().argsort(-1, descending=True)[:, :3]
        ritz = Y.gather(-1, top.unsqueeze(1).expand(-1, 9, -1)).transpose(1, 2)  # [7, 3, 9]
        y = x @ S.T  # its coefficients: a combination of the top-3 Ritz vectors only, each with weight 1/sqrt(3)
        assert torch.allclose((ritz @ y.unsqueeze(-1)).squeeze(-1).abs(), torch.full((7, 3), 3**-0.5, dtype=y.dtype))
        x2, Qx = ws.with_products(LayerOperator(w), U, 3)
        assert torch.allclose(x2, x, atol=1e-12)
        assert torch.allclose(Qx, torch.einsum("nij,nj->ni", _Q(w, U), x), rtol=1e-10, atol=1e-12)


def test_choose_solver_by_shape():
    def w(d, dm):
        z = torch.zeros
        return BilinearWeights(z(d, dm), z(d, dm), z(dm, d), z(d), False, 0, None)

    assert choose_solver(w(128, 512), 8) == "dense"  # the trained TinyStories layer
    assert choose_solver(w(64, 172), 8) == "dense"  # converted stories260k
    assert choose_solver(w(2048, 5632), 8) == "lanczos" and choose_solver(w(512, 2048), 16) == "lanczos"
    edge = DENSE_FACTOR * (8 + 6) * 49  # d^2 = 3 * 14 * 49 = 2058 -> d = 45 is dense, 46 is not
    assert choose_solver(w(45, 49), 8) == "dense" and 45 * 45 <= edge < 46 * 46
    assert choose_solver(w(46, 49), 8) == "lanczos"
    assert choose_solver(w(2048, 5632), 8, "dense") == "dense"
    with pytest.raises(ValueError, match="not one of auto, dense, lanczos"):
        choose_solver(w(8, 8), 2, "eigh")
