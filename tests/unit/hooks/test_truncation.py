"""truncated_mlp: the MLP output along the directions replaced by its top-k approximation, exactly."""

from __future__ import annotations

import pytest
import torch
from tests.unit.hooks.test_hooks import HOOK_EIG, HOOK_IN, L, MLP_OUT, directions, hook_state, model64, tokens

import bilinear_lens as bl
from bilinear_lens.hooks.truncation import truncation_sweep


def run(model, k=None, eig=None, fwd_hooks=()):
    saved = {}

    def save(value, hook):
        saved[hook.name] = value.detach().clone()

    hooks = [(MLP_OUT, save), (HOOK_IN, save), *fwd_hooks]
    if k is None:
        logits = model.run_with_hooks(tokens(), fwd_hooks=hooks)
    else:
        with bl.truncated_mlp(model, L, eig, k):
            logits = model.run_with_hooks(tokens(), fwd_hooks=hooks)
    return logits, saved


@pytest.mark.parametrize("bias", [False, True])
def test_full_spectrum_changes_nothing_and_k0_removes_the_component(bias):
    model, D = model64(bias), directions()
    eig = bl.eigendecompose(model, L, D)
    before = hook_state(model)
    clean_logits, clean = run(model)
    full_logits, _ = run(model, eig.k, eig)
    torch.testing.assert_close(full_logits, clean_logits, rtol=0, atol=1e-10)
    _, zero = run(model, 0, eig)
    b_out = model.blocks[L].mlp.b_out.detach()
    along = zero[MLP_OUT] @ D.T
    torch.testing.assert_close(along, (b_out @ D.T).expand_as(along), rtol=0, atol=1e-10)
    change = zero[MLP_OUT] - clean[MLP_OUT]
    basis = torch.linalg.qr(D.T).Q
    torch.testing.assert_close(change - change @ basis @ basis.T, torch.zeros_like(change), rtol=0, atol=1e-10)
    assert (clean[MLP_OUT] @ D.T - along).abs().max() > 1e-3  # the removed component was not zero
    assert hook_state(model) == before and model.blocks[L].mlp.eigen is None


@pytest.mark.parametrize("k", [1, 5])
def test_top_k_output_equals_rank_k_quadratic_form(k):
    model, D = model64(bias=True), directions()
    eig = bl.eigendecompose(model, L, D)
    _, out = run(model, k, eig)
    x = eig.lift(out[HOOK_IN])
    Qk = eig.truncate(k).matrices()  # best rank-k approximation of each Q(u_j)
    expected = torch.einsum("bpi,nij,bpj->bpn", x, Qk, x)
    got = (out[MLP_OUT] - model.blocks[L].mlp.b_out) @ D.T
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_hook_eig_shows_kept_activations_and_stays_editable():
    model, D = model64(), directions()
    eig = bl.eigendecompose(model, L, D)
    k = 3
    with bl.truncated_mlp(model, L, eig, k):
        _, cache = model.run_with_cache(tokens())
    assert cache[HOOK_EIG].shape == (2, 7, 3, k)
    torch.testing.assert_close(cache[HOOK_EIG], eig.truncate(k).activations(cache[HOOK_IN]))
    # zeroing the kept activations of direction 0 leaves exactly b_out along it
    def ablate(value, hook):
        value = value.clone()
        value[..., 0, :] = 0
        return value

    _, out = run(model, k, eig, fwd_hooks=[(HOOK_EIG, ablate)])
    b_out = model.blocks[L].mlp.b_out.detach()
    torch.testing.assert_close(out[MLP_OUT] @ D[0], (b_out @ D[0]).expand(2, 7), rtol=0, atol=1e-10)


def test_bad_k_and_sweep():
    model, D = model64(), directions()
    eig = bl.eigendecompose(model, L, D).truncate(4)
    for bad in (5, -1):
        with pytest.raises(ValueError, match="out of range"):
            with bl.truncated_mlp(model, L, eig, bad):
                pass
    assert model.blocks[L].mlp.eigen is None
    clean = model(tokens(), return_type="loss").item()
    results = truncation_sweep(model, L, bl.eigendecompose(model, L, D), [0, 2, 32],
                               lambda: model(tokens(), return_type="loss").item(), progress=False)
    assert [k for k, _ in results] == [0, 2, 32]
    assert results[-1][1] == pytest.approx(clean, abs=1e-10)
    assert results[0][1] != pytest.approx(clean, abs=1e-6)


def test_edit_with_given_post_equals_recomputed():
    from transformer_lens.hook_points import HookPoint

    from bilinear_lens.hooks import AttachedEigen

    model = model64(bias=True)
    mlp = model.blocks[L].mlp
    attached = AttachedEigen(bl.eigendecompose(model, L, directions()).truncate(3), mlp, replace=True)
    x = torch.randn(5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    post = (x @ mlp.W_gate + mlp.b_gate) * (x @ mlp.W_in + mlp.b_in)
    hook = HookPoint()
    delta = attached.edit(x, hook)
    torch.testing.assert_close(attached.edit(x, hook, post=post), delta, rtol=0, atol=1e-12)
    assert delta.abs().max() > 1e-3  # truncating to 3 of 33 eigenvectors does change the output
