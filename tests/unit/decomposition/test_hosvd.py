"""hosvd: SVD of the flattened symmetric tensor, reconstruction identity, components' eigendecompositions."""

from __future__ import annotations

import pytest
import torch
from tests.unit.hooks.test_hooks import HOOK_EIG, HOOK_IN, L, directions, model64, tokens

import bilinear_lens as bl


def mlp_out_minus_bias(model, x):
    mlp = model.blocks[L].mlp
    with torch.no_grad():
        return mlp(x) - mlp.b_out


def inputs(n: int = 9) -> torch.Tensor:
    return torch.randn(n, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("bias", [False, True])
def test_full_output_space_reconstruction(bias):
    model = model64(bias)
    h = bl.hosvd(model, L)
    assert h.r == 32 and h.eigen.homogeneous == bias and h.output_vectors.shape == (32, 32)
    x = inputs()
    y = mlp_out_minus_bias(model, x)
    torch.testing.assert_close(h.reconstruct(x), y, rtol=1e-10, atol=1e-10)
    # the explicit sum over components and eigenvectors, as the formula reads
    manual = torch.einsum("bs,s,sd->bd", h.eigen.activations(x).sum(-1), h.singular_values, h.output_vectors)
    torch.testing.assert_close(manual, y, rtol=1e-10, atol=1e-10)


def test_matches_dense_svd_of_flattened_tensor():
    model = model64(bias=True)
    D = directions(5)
    h = bl.hosvd(model, L, D)
    B = bl.interaction_matrices(model, L, D, dtype=torch.float64).flatten(1)  # [n, d*d]
    U, S, Vh = torch.linalg.svd(B, full_matrices=False)
    torch.testing.assert_close(h.singular_values, S, rtol=1e-10, atol=1e-12)
    Qs = h.matrices()  # [r, d, d], symmetric, Frobenius-orthonormal
    torch.testing.assert_close(Qs, Qs.transpose(-1, -2), rtol=0, atol=1e-12)
    gram = Qs.flatten(1) @ Qs.flatten(1).T
    torch.testing.assert_close(gram, torch.eye(h.r, dtype=gram.dtype), rtol=0, atol=1e-10)
    # same subspaces as the dense SVD (singular vectors up to sign)
    torch.testing.assert_close((Qs.flatten(1) @ Vh.T).abs(), torch.eye(5, dtype=gram.dtype), rtol=0, atol=1e-8)
    torch.testing.assert_close((h.coefficients.T @ U).abs(), torch.eye(5, dtype=gram.dtype), rtol=0, atol=1e-8)
    # B_D = sum_s a_s sigma_s vec(Q_s)
    torch.testing.assert_close(h.coefficients @ torch.diag(h.singular_values) @ Qs.flatten(1), B,
                               rtol=1e-10, atol=1e-10)


def test_restricted_directions_project_the_output():
    model = model64()
    D = directions(5)
    h = bl.hosvd(model, L, D)
    x = inputs()
    y = mlp_out_minus_bias(model, x)
    # coordinates: D y = A diag(sigma) q(x)
    torch.testing.assert_close(h.components(x) * h.singular_values @ h.coefficients.T, y @ D.T,
                               rtol=1e-10, atol=1e-10)
    # output space: sum_s o_s sigma_s q_s(x) = P_D y
    P = torch.linalg.pinv(D) @ D
    torch.testing.assert_close(h.reconstruct(x), y @ P.T, rtol=1e-10, atol=1e-10)
    assert (h.reconstruct(x) - y).abs().max() > 1e-3  # not the full output for n < d_model


def test_top_k_components_and_errors():
    model = model64()
    full, top = bl.hosvd(model, L), bl.hosvd(model, L, k=4)
    assert top.r == 4 and top.eigen.n == 4
    torch.testing.assert_close(top.singular_values, full.singular_values[:4], rtol=1e-10, atol=1e-12)
    # the truncation error is the energy of the dropped components (Eckart-Young in Frobenius norm)
    B = bl.interaction_matrices(model, L, torch.eye(32, dtype=torch.float64)).flatten(1)
    Bk = top.coefficients @ torch.diag(top.singular_values) @ top.matrices().flatten(1)
    err = torch.linalg.matrix_norm(B - Bk)
    assert err.item() == pytest.approx(full.singular_values[4:].square().sum().sqrt().item(), rel=1e-8)
    with pytest.raises(ValueError, match="out of range"):
        bl.hosvd(model, L, directions(3), k=4)
    with pytest.raises(ValueError, match="d_model=32"):
        bl.hosvd(model, L, torch.randn(3, 31, dtype=torch.float64))


def test_components_attach_as_hooks():
    model = model64()
    h = bl.hosvd(model, L, k=3)
    with bl.attach_eigenvectors(model, L, h.eigen):
        _, cache = model.run_with_cache(tokens(), names_filter=[HOOK_EIG, HOOK_IN])
    torch.testing.assert_close(cache[HOOK_EIG].sum(-1), h.components(cache[HOOK_IN]), rtol=1e-10, atol=1e-10)
