"""attach_eigenvectors: hook_eig in the cache, exact edits through run_with_hooks, clean detaching."""

from __future__ import annotations

import warnings

import pytest
import torch
from tests.conftest import HOOKED, bridge64, needs_hooked, tiny_cfg

if HOOKED:
    from transformer_lens import HookedTransformer

import bilinear_lens as bl
from bilinear_lens.hooks import attached_layers

L = 1
HOOK_EIG, HOOK_IN = f"blocks.{L}.mlp.hook_eig", f"blocks.{L}.mlp.hook_in"
MLP_OUT = f"blocks.{L}.hook_mlp_out" if HOOKED else f"blocks.{L}.mlp.hook_out"  # the bridge's canonical name


def model64(bias: bool = False, cls=None):
    """A float64 2-layer bilinear model: a HookedTransformer (``cls``), or on TransformerLens 4.x a bridge."""
    if cls is None and not HOOKED:
        return bridge64(bias)
    torch.manual_seed(0)
    model = (cls or HookedTransformer)(tiny_cfg(dtype=torch.float64)).eval()
    if bias:
        with torch.no_grad():
            for block in model.blocks:
                block.mlp.b_in.normal_(std=0.3)
                block.mlp.b_gate.normal_(std=0.3)
                block.mlp.b_out.normal_(std=0.3)
    return model


def tokens(batch: int = 2, pos: int = 7) -> torch.Tensor:
    return torch.randint(0, 97, (batch, pos), generator=torch.Generator().manual_seed(1))


def directions(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def hook_state(model):
    return (dict(model.hook_dict), dict(model.mod_dict), set(model.state_dict()),
            sum(len(h._forward_hooks) + len(h._backward_hooks) for h in model.hook_dict.values()))


@pytest.mark.parametrize("bias", [False, True])
def test_cache_equals_activations_and_sums_to_mlp_out(bias):
    model, D = model64(bias), directions()
    eig = bl.eigendecompose(model, L, D)
    assert eig.homogeneous == bias
    with bl.attach_eigenvectors(model, L, eig):
        _, cache = model.run_with_cache(tokens())
    acts = cache[HOOK_EIG]
    assert acts.shape == (2, 7, 3, 32 + bias)
    torch.testing.assert_close(acts, eig.activations(cache[HOOK_IN]), rtol=0, atol=1e-12)
    target = (cache[MLP_OUT] - model.blocks[L].mlp.b_out) @ D.T
    torch.testing.assert_close(acts.sum(-1), target, rtol=1e-10, atol=1e-10)


def test_names_filter_and_untouched_outputs():
    model = model64()
    eig = bl.eigendecompose(model, L, directions())
    plain_logits, plain = model.run_with_cache(tokens())
    with bl.attach_eigenvectors(model, L, eig):
        logits, cache = model.run_with_cache(tokens(), names_filter=lambda name: name.endswith("hook_eig"))
        bare = model(tokens())  # no hook on hook_eig at all
    assert list(cache.keys()) == [HOOK_EIG]
    assert torch.equal(logits, plain_logits) and torch.equal(bare, plain_logits)
    assert HOOK_EIG not in plain.cache_dict  # fires only while attached


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_ablating_one_eigenvector_changes_output_exactly(bias, in_place):
    model, D = model64(bias), directions()
    eig = bl.eigendecompose(model, L, D)
    j, i = 1, 2
    saved = {}

    def save(value, hook):
        saved[hook.name] = value.detach().clone()

    def ablate(value, hook):
        if in_place:
            value[..., j, i] = 0.0
            return None
        value = value.clone()
        value[..., j, i] = 0.0
        return value

    with bl.attach_eigenvectors(model, L, eig):
        _, clean = model.run_with_cache(tokens())
        model.run_with_hooks(tokens(), fwd_hooks=[(HOOK_EIG, ablate), (MLP_OUT, save)])
    change = saved[MLP_OUT] - clean[MLP_OUT]  # [batch, pos, d_model]
    act = clean[HOOK_EIG][..., j, i]
    assert act.abs().max() > 1e-3  # the edit is not trivially zero
    expected = torch.zeros_like(clean[HOOK_EIG][..., 0])
    expected[..., j] = -act
    torch.testing.assert_close(change @ D.T, expected, rtol=0, atol=1e-10)
    # the orthogonal complement of span(D) is unchanged
    basis = torch.linalg.qr(D.T).Q  # [d_model, n]
    torch.testing.assert_close(change - change @ basis @ basis.T, torch.zeros_like(change), rtol=0, atol=1e-10)


def test_backward_through_hook_eig_gives_pinv_gradient():
    model, D = model64(), directions()
    eig = bl.eigendecompose(model, L, D)
    with bl.attach_eigenvectors(model, L, eig):
        _, cache = model.run_with_cache(tokens(), incl_bwd=True, return_type="loss",
                                        names_filter=[HOOK_EIG, MLP_OUT])
    grad_eig = cache[HOOK_EIG + "_grad"]  # [batch, pos, n, k]: same value for every k
    expected = cache[MLP_OUT + "_grad"] @ torch.linalg.pinv(D)  # dL/d(u_j . out) via pinv
    torch.testing.assert_close(grad_eig, expected[..., None].expand_as(grad_eig), rtol=1e-9, atol=1e-12)


def test_detaches_cleanly_also_on_error():
    model = model64()
    eig = bl.eigendecompose(model, L, directions())
    before = hook_state(model)
    with bl.attach_eigenvectors(model, L, eig):
        assert attached_layers(model) == [L]
        model.run_with_cache(tokens())
        assert hook_state(model)[:3] == before[:3]
    assert model.blocks[L].mlp.eigen is None and hook_state(model) == before
    with pytest.raises(KeyError):
        with bl.attach_eigenvectors(model, L, eig):
            raise KeyError("boom")
    assert model.blocks[L].mlp.eigen is None and hook_state(model) == before
    _, cache = model.run_with_cache(tokens())
    assert HOOK_EIG not in cache.cache_dict


def test_several_layers_nested_and_double_attach_is_an_error():
    model, D = model64(), directions()
    eig0, eig1 = bl.eigendecompose(model, 0, D[:2]), bl.eigendecompose(model, 1, D)
    with bl.attach_eigenvectors(model, 0, eig0), bl.attach_eigenvectors(model, 1, eig1):
        _, cache = model.run_with_cache(tokens())
        with pytest.raises(RuntimeError, match="already has an eigendecomposition attached"):
            with bl.attach_eigenvectors(model, 1, eig1):
                pass
        assert attached_layers(model) == [0, 1]
    assert cache["blocks.0.mlp.hook_eig"].shape[-2:] == (2, 32)
    torch.testing.assert_close(cache["blocks.0.mlp.hook_eig"], eig0.activations(cache["blocks.0.mlp.hook_in"]))
    torch.testing.assert_close(cache[HOOK_EIG], eig1.activations(cache[HOOK_IN]))
    assert attached_layers(model) == []


def test_mismatched_decomposition_is_rejected():
    model = model64()
    eig0 = bl.eigendecompose(model, 0, directions())
    with pytest.raises(ValueError, match="of layer 0"):
        with bl.attach_eigenvectors(model, 1, eig0):
            pass
    stale = bl.eigendecompose(model, L, directions())
    with torch.no_grad():
        model.blocks[L].mlp.W_in.mul_(2.0)  # the weights changed after decomposing
    with pytest.raises(ValueError, match="does not match layer 1"):
        with bl.attach_eigenvectors(model, L, stale):
            pass
    with bl.attach_eigenvectors(model, L, stale, check=False):  # explicit opt-out
        pass
    biased = model64(bias=True)
    with pytest.raises(ValueError, match="homogeneous"):
        with bl.attach_eigenvectors(biased, L, bl.eigendecompose(model64(), L, directions())):
            pass


@needs_hooked
def test_float32_decomposition_on_float64_eig():
    torch.manual_seed(0)
    model = HookedTransformer(tiny_cfg()).eval()
    eig = bl.eigendecompose(model, L, directions().float(), dtype=torch.float64)
    with bl.attach_eigenvectors(model, L, eig):
        _, cache = model.run_with_cache(tokens())
    assert cache[HOOK_EIG].dtype == torch.float32
    target = (cache[MLP_OUT] - model.blocks[L].mlp.b_out) @ directions().float().T
    torch.testing.assert_close(cache[HOOK_EIG].sum(-1), target, rtol=1e-4, atol=1e-4)


def test_hooked_sae_transformer():
    sae_lens = pytest.importorskip("sae_lens")
    model = model64(cls=sae_lens.HookedSAETransformer)
    D = directions()
    eig = bl.eigendecompose(model, L, D)
    before = hook_state(model)
    with bl.attach_eigenvectors(model, L, eig):
        _, cache = model.run_with_cache(tokens(), names_filter=[HOOK_EIG, HOOK_IN, MLP_OUT])
        out = model.run_with_hooks(tokens(), fwd_hooks=[(HOOK_EIG, lambda v, hook: torch.zeros_like(v))],
                                   return_type="logits")
    torch.testing.assert_close(cache[HOOK_EIG], eig.activations(cache[HOOK_IN]), rtol=0, atol=1e-12)
    target = (cache[MLP_OUT] - model.blocks[L].mlp.b_out) @ D.T
    torch.testing.assert_close(cache[HOOK_EIG].sum(-1), target, rtol=1e-10, atol=1e-10)
    assert out.shape == (2, 7, 97) and hook_state(model) == before


@needs_hooked
def test_processed_checkpoint_and_stale_unprocessed_decomposition(tmp_path):
    torch.manual_seed(0)
    model = HookedTransformer(tiny_cfg()).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.ln2.w.uniform_(0.5, 1.5)  # non-trivial RMSNorm weights, folded by from_pretrained
    bl.save_pretrained(model, tmp_path / "ckpt")
    folded = bl.load_pretrained(tmp_path / "ckpt")
    raw = bl.load_pretrained(tmp_path / "ckpt", processing=False)
    D = directions().float()
    eig = bl.eigendecompose(folded, L, D, dtype=torch.float64)
    with bl.attach_eigenvectors(folded, L, eig):
        _, cache = folded.run_with_cache(tokens(), names_filter=[HOOK_EIG, MLP_OUT])
    target = (cache[MLP_OUT] - folded.blocks[L].mlp.b_out) @ D.T
    torch.testing.assert_close(cache[HOOK_EIG].sum(-1), target, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="processed model"):
        with bl.attach_eigenvectors(folded, L, bl.eigendecompose(raw, L, D)):
            pass


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_edits_under_no_grad_and_inference_mode(mode):
    model, D = model64(), directions()
    eig = bl.eigendecompose(model, L, D)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    saved = {}

    def save(value, hook):
        saved[hook.name] = value.clone()

    def ablate(value, hook):
        value[..., 0, 0] = 0.0  # in place, returns None

    with ctx, bl.attach_eigenvectors(model, L, eig):
        clean, cache = model.run_with_cache(tokens(), names_filter=[HOOK_EIG, MLP_OUT])
        model.run_with_hooks(tokens(), fwd_hooks=[(HOOK_EIG, ablate), (MLP_OUT, save)])
        plain = model.run_with_hooks(tokens(), fwd_hooks=[(HOOK_EIG, lambda v, hook: None)])
    assert torch.equal(plain, clean)
    change = (saved[MLP_OUT] - cache[MLP_OUT]) @ D.T
    torch.testing.assert_close(change[..., 0], -cache[HOOK_EIG][..., 0, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(change[..., 1:], torch.zeros_like(change[..., 1:]), rtol=0, atol=1e-10)


def test_dependent_directions_warn_on_edit_only():
    model = model64()
    u = directions(1)
    eig = bl.eigendecompose(model, L, torch.cat([u, 2 * u]))  # rank 1: D pinv(D) is a projection, not I
    saved = {}

    def save(value, hook):
        saved[hook.name] = value.detach().clone()

    with bl.attach_eigenvectors(model, L, eig):
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # caching only: no warning
            model.run_with_cache(tokens(), names_filter=[HOOK_EIG, MLP_OUT])
        with pytest.warns(UserWarning, match="linearly dependent"):
            model.run_with_hooks(tokens(), fwd_hooks=[(HOOK_EIG, lambda v, hook: torch.zeros_like(v)),
                                                      (MLP_OUT, save)])
    # zeroing both (consistent) sums still removes the output along u exactly: least squares is exact here
    along = saved[MLP_OUT] @ u[0]
    torch.testing.assert_close(along, torch.zeros_like(along), rtol=0, atol=1e-10)


def test_run_with_cache_with_saes():
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    model = model64(cls=sae_lens.HookedSAETransformer)
    cfg = sae_lens.StandardSAEConfig(d_in=32, d_sae=64, dtype="float64", apply_b_dec_to_input=False,
                                     metadata=SAEMetadata(hook_name=MLP_OUT, hook_head_index=None))
    sae = sae_lens.StandardSAE(cfg)
    eig = bl.eigendecompose(model, L, directions())
    before = hook_state(model)
    with bl.attach_eigenvectors(model, L, eig):
        _, cache = model.run_with_cache_with_saes(tokens(), saes=[sae], use_error_term=True)
    assert f"{MLP_OUT}.hook_sae_acts_post" in cache.cache_dict
    torch.testing.assert_close(cache[HOOK_EIG], eig.activations(cache[HOOK_IN]), rtol=0, atol=1e-12)
    # SAELens itself swaps the HookPoint object at the SAE's hook (blocks.1.hook_mlp_out); compare names
    after = hook_state(model)
    assert (set(after[0]), set(after[1]), after[2], after[3]) == (set(before[0]), set(before[1]), before[2], before[3])
    assert model.hook_dict[HOOK_EIG] is before[0][HOOK_EIG] and model.blocks[L].mlp.eigen is None
