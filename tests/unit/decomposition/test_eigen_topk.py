"""Implicit top-k eigensolver (batched thick-restart Lanczos) against dense eigh, and exactness."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import needs_hooked

from bilinear_lens import eigendecompose, interaction_matrices
from bilinear_lens.testing import BilinearStack, trained_like_layer
from bilinear_lens.decomposition.interaction import interaction_from_weights, interaction_matvec, output_scales
from bilinear_lens.decomposition.lanczos import lanczos_topk, lanczos_topk_info
from bilinear_lens.decomposition.weights import bilinear_weights

@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Small ops: one thread avoids OpenMP sync stalls on a loaded machine (100x here); no effect on results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


VALUE_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
EXACT_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def stack(d_model=64, d_mlp=192, bias=False, dtype=torch.float64, seed=0, random=False):
    if random:
        torch.manual_seed(seed)
        mlp = trained_like_layer(d_model, d_mlp, dtype=dtype, seed=seed)
        mlp.reset_parameters()  # nn.Linear-like random weights
        if bias:
            with torch.no_grad():
                for b in (mlp.b_in, mlp.b_gate, mlp.b_out):
                    b.normal_(0, 0.1)
    else:
        mlp = trained_like_layer(d_model, d_mlp, bias=bias, dtype=dtype, seed=seed)
    return BilinearStack([mlp])


def unit_directions(n, d_model, dtype, seed=1):
    u = torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u / u.norm(dim=-1, keepdim=True)).to(dtype)


def dense_reference(model, directions, k):
    """Top-k by |lambda| from float64 dense eigh: values [n, k], vectors [n, k, d], full values [n, d]."""
    Q = interaction_matrices(model, 0, directions.double(), dtype=torch.float64)
    e, v = torch.linalg.eigh(Q)
    order = e.abs().argsort(-1, descending=True)
    e = e.gather(-1, order)
    v = v.gather(-1, order.unsqueeze(1).expand_as(v)).transpose(1, 2)
    return e[:, :k], v[:, :k], e


def test_matvec_equals_dense_product():
    model = stack(d_model=24, d_mlp=40, bias=True)
    w = bilinear_weights(model, 0)
    u = unit_directions(3, 24, torch.float64)
    x = torch.randn(3, w.d, 5, dtype=torch.float64)
    Q = interaction_from_weights(w, u)
    torch.testing.assert_close(interaction_matvec(w, output_scales(w, u), x), Q @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_topk_matches_dense_on_trained_like_weights(dtype, bias):
    model = stack(bias=bias, dtype=dtype)
    u = unit_directions(6, 64, dtype)
    k = 8
    eig = eigendecompose(model, 0, u, k=k, method="lanczos")
    ref_vals, ref_vecs, full = dense_reference(model, u, k)
    assert eig.homogeneous is bias and eig.vectors.shape == (6, k, 65 if bias else 64)
    assert eig.values.dtype == dtype
    assert (ref_vals > 0).any() and (ref_vals < 0).any()  # both signs among the top k
    rel = ((eig.values.double() - ref_vals).abs() / ref_vals.abs()).max()
    assert rel <= VALUE_TOL[dtype], f"max relative eigenvalue error {rel:.2e}"
    # vectors equal up to sign where the eigenvalue is separated from its neighbours
    gaps = torch.stack([(full[:, :k] - full[:, :k].roll(1, -1)).abs(),
                        (full[:, :k] - full[:, 1 : k + 1]).abs()]).amin(0) / full[:, :1].abs()
    gaps[:, 0] = (full[:, 0] - full[:, 1]).abs() / full[:, 0].abs()
    cos = (eig.vectors.double() * ref_vecs).sum(-1).abs()
    separated = gaps > 1e-2
    assert separated.sum() > 0.8 * separated.numel()
    assert cos[separated].min() >= (1 - 1e-4 if dtype == torch.float32 else 1 - 1e-9)
    norms = eig.vectors.double().norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_negative_direction_flips_the_spectrum():
    model = stack()
    u = unit_directions(4, 64, torch.float64)
    w = bilinear_weights(model, 0)
    vals, vecs = lanczos_topk(w, u, 6)
    neg_vals, neg_vecs = lanczos_topk(w, -u, 6)
    torch.testing.assert_close(neg_vals, -vals, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close((neg_vecs * vecs).sum(-1).abs(), torch.ones_like(vals), rtol=0, atol=1e-8)


def test_transformer_layer_and_ritz_residuals(tiny_transformer):
    u = unit_directions(5, 32, torch.float32)
    w = bilinear_weights(tiny_transformer, 1, dtype=torch.float64)
    vals, vecs, info = lanczos_topk_info(w, u.double(), 4)
    ref_vals, _, _ = dense_reference_layer(tiny_transformer, 1, u, 4)
    torch.testing.assert_close(vals, ref_vals, rtol=1e-10, atol=1e-14)
    assert bool(info.converged.all()) and info.residuals.max() <= 10 * info.tol
    # the residuals are real: recompute ||Q v - lambda v|| / |lambda_max| from the dense matrices
    Q = interaction_from_weights(w, u.double())
    res = (torch.einsum("nij,nkj->nki", Q, vecs) - vals.unsqueeze(-1) * vecs).norm(dim=-1) / vals[:, :1].abs()
    torch.testing.assert_close(res, info.residuals, rtol=1e-3, atol=1e-13)


def dense_reference_layer(model, layer, directions, k):
    e, v = torch.linalg.eigh(interaction_matrices(model, layer, directions.double(), dtype=torch.float64))
    order = e.abs().argsort(-1, descending=True)[:, :k]
    return e.gather(-1, order), None, e


def test_deterministic_and_seed_independent():
    model = stack(dtype=torch.float32)
    u = unit_directions(3, 64, torch.float32)
    a = eigendecompose(model, 0, u, k=5, method="lanczos")
    b = eigendecompose(model, 0, u, k=5, method="lanczos")
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)
    w = bilinear_weights(model, 0)
    c_vals, _ = lanczos_topk(w, u, 5, seed=123)
    torch.testing.assert_close(c_vals, a.values, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block_size", [1, 2, 3, 5])
def test_block_sizes_agree_with_dense(block_size):
    model = stack(d_model=96, d_mlp=160)
    u = unit_directions(3, 96, torch.float64)
    vals, vecs, info = lanczos_topk_info(bilinear_weights(model, 0), u, 6, block_size=block_size, krylov_dim=30)
    ref_vals, ref_vecs, _ = dense_reference(model, u, 6)
    assert info.block_size == block_size and info.krylov_dim % block_size == 0
    assert (info.krylov_dim - info.keep) % block_size == 0 and info.keep >= 6
    torch.testing.assert_close(vals, ref_vals, rtol=1e-10, atol=1e-13)
    assert bool(info.converged.all()) and info.residuals.max() <= 10 * info.tol


@pytest.mark.parametrize("block_size", [1, 4])
def test_exhausted_krylov_space_low_rank_and_full_width(block_size):
    # d_mlp = 3 neurons: every Q has rank <= 6 < k, so Lanczos must restart from fresh vectors
    model = stack(d_model=80, d_mlp=3, dtype=torch.float64)
    u = unit_directions(2, 80, torch.float64)
    vals, vecs = lanczos_topk(bilinear_weights(model, 0), u, 10, block_size=block_size)
    ref_vals, _, _ = dense_reference(model, u, 10)
    assert torch.isfinite(vecs).all()
    torch.testing.assert_close(vals[:, :6], ref_vals[:, :6], rtol=1e-10, atol=1e-13)
    assert vals[:, 6:].abs().max() <= 1e-12 * vals[:, 0].abs().max()
    # krylov_dim = d: one cycle spans the whole space
    model = stack(d_model=20, d_mlp=30, dtype=torch.float64)
    u = unit_directions(2, 20, torch.float64)
    vals, _ = lanczos_topk(bilinear_weights(model, 0), u, 15, block_size=block_size)
    torch.testing.assert_close(vals, dense_reference(model, u, 15)[0], rtol=1e-9, atol=1e-13)


def test_zero_direction_gives_zero_spectrum_without_warning(recwarn):
    model = stack()
    u = torch.zeros(2, 64, dtype=torch.float64)
    u[1, 0] = 1.0
    vals, vecs = lanczos_topk(bilinear_weights(model, 0), u, 4)
    assert torch.all(vals[0] == 0) and torch.isfinite(vecs).all() and (vals[1] != 0).all()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_non_convergence_warns():
    model = stack()
    u = unit_directions(2, 64, torch.float64)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        _, _, info = lanczos_topk_info(bilinear_weights(model, 0), u, 8, tol=1e-14, krylov_dim=10, max_restarts=0)
    assert not bool(info.converged.all())


def test_bad_k_and_direction_width_are_clear_errors(tiny_transformer):
    u = torch.randn(3, 32)
    with pytest.raises(ValueError, match=r"k=33 is out of range.*1 <= k <= 32"):
        eigendecompose(tiny_transformer, 0, u, k=33, method="lanczos")
    with pytest.raises(ValueError, match="k=0 is out of range"):
        eigendecompose(tiny_transformer, 0, u, k=0)
    with pytest.raises(ValueError, match=r"d_model=32.*got \(3, 31\)"):
        eigendecompose(tiny_transformer, 0, torch.randn(3, 31), k=4)
    w = bilinear_weights(tiny_transformer, 0)
    with pytest.raises(ValueError, match="k=40 is out of range"):
        lanczos_topk(w, u, 40)
    with pytest.raises(ValueError, match="d_model=32"):
        lanczos_topk(w, torch.randn(3, 30), 4)
    with pytest.raises(ValueError, match="krylov_dim=4 must exceed k=8"):
        lanczos_topk(w, u, 8, krylov_dim=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["random", "trained_like"])
@pytest.mark.parametrize("bias", [False, True])
def test_full_spectrum_activations_sum_to_mlp_output(dtype, kind, bias):
    model = stack(d_model=48, d_mlp=96, bias=bias, dtype=dtype, random=kind == "random")
    mlp = model.bilinear_layers()[0]
    u = unit_directions(5, 48, dtype)
    eig = eigendecompose(model, 0, u)
    assert eig.k == eig.d == (49 if bias else 48)
    x = torch.randn(4, 7, 48, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    with torch.no_grad():
        target = torch.einsum("bpd,nd->bpn", mlp(x) - mlp.b_out, u)
    got = eig.activations(x).sum(-1)
    rel = (got - target).abs().max() / target.abs().max()
    assert rel <= EXACT_TOL[dtype], f"relative error {rel:.2e}"


@needs_hooked
@pytest.mark.parametrize("fold_ln", [False, True])
def test_exactness_on_hooked_transformer_hook_in(fold_ln):
    from transformer_lens import HookedTransformer

    from tests.conftest import tiny_cfg

    torch.manual_seed(0)
    model = HookedTransformer(tiny_cfg(dtype=torch.float64)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.b_in.normal_(0, 0.1)
            block.mlp.b_gate.normal_(0, 0.1)
            block.ln2.w.normal_(1.0, 0.2)
    if fold_ln:
        model.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    tokens = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    _, cache = model.run_with_cache(tokens)
    u = unit_directions(4, 32, torch.float64)
    eig = eigendecompose(model, 1, u)
    assert eig.homogeneous
    target = torch.einsum("bpd,nd->bpn", cache["blocks.1.hook_mlp_out"] - model.blocks[1].mlp.b_out, u)
    got = eig.activations(cache["blocks.1.mlp.hook_in"]).sum(-1)
    assert (got - target).abs().max() / target.abs().max() <= 1e-10


@needs_hooked
def test_swiglu_layer_is_rejected(shared):
    from transformer_lens import HookedTransformer

    path = shared("models", "stories260k")
    model = HookedTransformer.from_pretrained_no_processing(str(path))
    with pytest.raises(TypeError, match="act_fn='silu'"):
        eigendecompose(model, 0, torch.randn(model.cfg.d_model), k=4)
    with pytest.raises(TypeError, match="not a bilinear MLP"):
        eigendecompose(model, 2, torch.randn(model.cfg.d_model))


def test_implicit_path_never_forms_q(monkeypatch):
    import bilinear_lens.decomposition.eigen as eigen_mod
    import bilinear_lens.decomposition.interaction as interaction_mod

    def forbidden(*args, **kwargs):
        raise AssertionError("the implicit solver formed an interaction matrix")

    model = stack(d_model=64, d_mlp=128)
    u = unit_directions(3, 64, torch.float64)
    ref_vals = dense_reference(model, u, 5)[0]
    monkeypatch.setattr(interaction_mod, "interaction_from_weights", forbidden)
    monkeypatch.setattr(eigen_mod, "interaction_from_weights", forbidden)
    eig = eigendecompose(model, 0, u, k=5, method="lanczos")
    torch.testing.assert_close(eig.values, ref_vals, rtol=1e-10, atol=1e-13)
    with pytest.raises(AssertionError, match="formed an interaction matrix"):
        eigendecompose(model, 0, u, k=5, method="dense")
