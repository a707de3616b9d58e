"""TransformerBridge.boot_transformers(folder): BilinearMLPBridge hooks, parity and exact decompositions.

Runs on TransformerLens 3.9 and 4.x (the HookedTransformer parity tests skip on 4.x, the SAELens
test skips without SAELens). Models: random 2-layer Llama folders (d_model 32, d_mlp 64, GQA 4/2,
non-trivial RMSNorm weights), bilinear with and without MLP biases, and SwiGLU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tests.conftest import make_llama_dir
from transformer_lens.model_bridge import TransformerBridge

import bilinear_lens as bl
from bilinear_lens.bridge import BilinearMLPBridge
from bilinear_lens.hooks import METADATA_KEY, check_processing, processing_signature
from bilinear_lens.registration import has_hooked_transformer

L = 1
MLP_HOOKS = ("hook_in", "hook_pre", "hook_pre_linear", "hook_post", "hook_out")
needs_hooked = pytest.mark.skipif(not has_hooked_transformer(), reason="TransformerLens 4.x has no HookedTransformer")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("bridge")
    made = {}
    for name, kw in {"bilinear": {}, "bias": {"mlp_bias": True}, "swiglu": {"hidden_act": "silu"}}.items():
        made[name] = (root / name, make_llama_dir(root / name, **kw))
    return made


def boot(path, compat: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
        if compat:
            bridge.enable_compatibility_mode()
    return bridge.eval()


def tokens(batch: int = 2, pos: int = 7) -> torch.Tensor:
    return torch.randint(3, 101, (batch, pos), generator=torch.Generator().manual_seed(1))


def directions(n: int = 3, d: int = 32) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(2))


def logprobs(model, toks) -> torch.Tensor:
    with torch.no_grad():
        out = model(toks)
    return getattr(out, "logits", out).log_softmax(-1)


def rel_close(actual, expected, rtol=1e-5):
    scale = expected.abs().max().clamp_min(1e-30)
    assert ((actual - expected).abs().max() / scale).item() <= rtol


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("kind", ["bilinear", "bias", "swiglu"])
def test_logits_match_hugging_face(folders, kind, compat):
    path, hf = folders[kind]
    bridge = boot(path, compat)
    mlp = bridge.blocks[0].mlp
    assert isinstance(mlp, BilinearMLPBridge) == (kind != "swiglu")
    assert (logprobs(bridge, tokens()) - logprobs(hf, tokens())).abs().max() <= 1e-4


@needs_hooked
@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("kind", ["bilinear", "bias"])
def test_logits_and_decompositions_match_hooked_transformer(folders, kind, compat):
    path, _ = folders[kind]
    bridge = boot(path, compat)
    hooked = bl.load_pretrained(path, processing=compat)  # fold_ln etc. exactly when the bridge processes
    assert (logprobs(bridge, tokens()) - logprobs(hooked, tokens())).abs().max() <= 1e-4
    u = directions()
    for layer in (0, 1):
        rel_close(bl.interaction_matrices(bridge, layer, u), bl.interaction_matrices(hooked, layer, u))
    # the hook_in values (the decomposition's coordinates) agree too
    _, c_bridge = bridge.run_with_cache(tokens())
    _, c_hooked = hooked.run_with_cache(tokens())
    for name in MLP_HOOKS[:-1]:
        rel_close(c_bridge[f"blocks.{L}.mlp.{name}"], c_hooked[f"blocks.{L}.mlp.{name}"], rtol=1e-4)


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("kind", ["bilinear", "bias"])
def test_mlp_hooks_follow_the_bilinear_formula(folders, kind, compat):
    bridge = boot(folders[kind][0], compat)
    mlp = bridge.blocks[L].mlp
    eig = bl.eigendecompose(bridge, L, directions(), dtype=torch.float64)
    with bl.attach_eigenvectors(bridge, L, eig):
        _, cache = bridge.run_with_cache(tokens())
    c = {name: cache[f"blocks.{L}.mlp.{name}"] for name in MLP_HOOKS + ("hook_eig",)}
    x = c["hook_in"]
    torch.testing.assert_close(c["hook_pre"], x @ mlp.W_gate + mlp.b_gate)
    torch.testing.assert_close(c["hook_pre_linear"], x @ mlp.W_in + mlp.b_in)
    torch.testing.assert_close(c["hook_post"], c["hook_pre"] * c["hook_pre_linear"], rtol=0, atol=0)
    torch.testing.assert_close(c["hook_out"], c["hook_post"] @ mlp.W_out + mlp.b_out)
    assert c["hook_eig"].shape == (2, 7, 3, eig.k) and mlp.has_bias == (kind == "bias") == eig.homogeneous
    if compat:  # HookedTransformer-style block aliases resolve to the same tensors
        torch.testing.assert_close(cache[f"blocks.{L}.hook_mlp_out"], c["hook_out"], rtol=0, atol=0)
    assert mlp.eigen is None


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("kind", ["bilinear", "bias"])
def test_eigen_activations_sum_to_mlp_output(folders, kind, compat):
    """sum_i lambda_i (v_i . x')^2 == u . (MLP(x) - b_out), 1e-5 relative in float32."""
    bridge = boot(folders[kind][0], compat)
    mlp, u = bridge.blocks[L].mlp, directions()
    eig = bl.eigendecompose(bridge, L, u)
    assert eig.k == 32 + (kind == "bias")
    with bl.attach_eigenvectors(bridge, L, eig):
        _, cache = bridge.run_with_cache(tokens(), names_filter=lambda n: n.startswith(f"blocks.{L}.mlp.hook"))
    target = (cache[f"blocks.{L}.mlp.hook_out"] - mlp.b_out) @ u.T
    rel_close(cache[f"blocks.{L}.mlp.hook_eig"].sum(-1), target)
    rel_close(eig.activations(cache[f"blocks.{L}.mlp.hook_in"]).sum(-1), target)


@pytest.mark.parametrize("compat", [False, True])
def test_editing_hook_eig_changes_the_output_exactly(folders, compat):
    bridge = boot(folders["bias"][0], compat)
    u = torch.linalg.qr(directions().T)[0].T  # orthonormal rows: pinv(D) = D^T
    eig = bl.eigendecompose(bridge, L, u)
    name = f"blocks.{L}.mlp.hook_eig"

    def ablate(acts, hook):
        acts = acts.clone()
        acts[..., 1, 0] = 0.0
        return acts

    with bl.attach_eigenvectors(bridge, L, eig):
        _, base = bridge.run_with_cache(tokens())
        saved = {}
        bridge.run_with_hooks(tokens(), fwd_hooks=[
            (name, ablate), (f"blocks.{L}.mlp.hook_out", lambda t, hook: saved.setdefault("out", t))])
    change = (saved["out"] - base[f"blocks.{L}.mlp.hook_out"]) @ u.T
    expected = torch.zeros_like(change)
    expected[..., 1] = -base[name][..., 1, 0]
    torch.testing.assert_close(change, expected, rtol=0, atol=1e-5 * base[name].abs().max().item())


@pytest.mark.parametrize("compat", [False, True])
def test_truncated_mlp_and_hosvd(folders, compat):
    bridge = boot(folders["bias"][0], compat)
    mlp, u = bridge.blocks[L].mlp, directions()
    eig = bl.eigendecompose(bridge, L, u)
    _, base = bridge.run_with_cache(tokens())
    ref_out = base[f"blocks.{L}.mlp.hook_out"]
    with bl.truncated_mlp(bridge, L, eig):  # the full spectrum changes nothing
        _, full = bridge.run_with_cache(tokens())
    rel_close(full[f"blocks.{L}.mlp.hook_out"], ref_out)
    with bl.truncated_mlp(bridge, L, eig, k=2):
        _, top2 = bridge.run_with_cache(tokens())
    x = base[f"blocks.{L}.mlp.hook_in"]
    rel_close((top2[f"blocks.{L}.mlp.hook_out"] - mlp.b_out) @ u.T, eig.truncate(2).activations(x).sum(-1))
    h = bl.hosvd(bridge, L)
    rel_close(h.reconstruct(x.double()), (ref_out - mlp.b_out).double(), rtol=1e-5)


def test_eigen_tree_refuses_a_transformer_as_for_hooked_transformer(folders):
    bridge = boot(folders["bilinear"][0], compat=False)
    with pytest.raises(TypeError, match="For a transformer, decompose each layer with eigendecompose"):
        bl.eigen_tree(bridge, directions(1)[0], depth=1, k=2)


def test_mismatched_decomposition_is_rejected_on_the_bridge(folders):
    raw, processed = boot(folders["bias"][0], False), boot(folders["bias"][0], True)
    eig = bl.eigendecompose(raw, L, directions())
    with pytest.raises(ValueError, match="does not match layer 1's current weights"):
        with bl.attach_eigenvectors(processed, L, eig):
            pass


def test_swiglu_bridge_is_refused_with_one_consistent_reason(folders):
    bridge = boot(folders["swiglu"][0], compat=True)
    with pytest.raises(TypeError) as err:
        bl.eigendecompose(bridge, 0, directions())
    message = str(err.value)
    assert "act_fn='silu' (SwiGLU), not a bilinear MLP" in message and "bilinear-lens convert" in message
    assert "'linear'" not in message


def test_bridge_built_without_the_plugin_says_how_to_fix_it(folders):
    bl.unregister()
    try:
        bridge = boot(folders["bilinear"][0], compat=False)
    finally:
        bl.register()
    assert type(bridge.blocks[0].mlp).__name__ == "GatedMLPBridge"
    with pytest.raises(TypeError, match="act_fn='linear': it computes a bilinear MLP .* after `import bilinear_lens`"):
        bl.interaction_matrices(bridge, 0, directions())


def test_sae_transformer_bridge_with_saes_on_the_bilinear_hooks(folders):
    sae_lens = pytest.importorskip("sae_lens")
    SAETransformerBridge = getattr(sae_lens, "SAETransformerBridge", None)
    if SAETransformerBridge is None:
        pytest.skip("this SAELens has no SAETransformerBridge")
    from sae_lens.saes.sae import SAEMetadata

    path, _ = folders["bias"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SAETransformerBridge.boot_transformers(str(path), device="cpu")
    model.enable_compatibility_mode()
    assert isinstance(model.blocks[L].mlp, BilinearMLPBridge)
    torch.manual_seed(0)
    saes = []
    for name, d_in in ((f"blocks.{L}.mlp.hook_in", 32), (f"blocks.{L}.mlp.hook_post", 64)):
        cfg = sae_lens.StandardSAEConfig(d_in=d_in, d_sae=16, apply_b_dec_to_input=False,
                                         metadata=SAEMetadata(hook_name=name, hook_head_index=None))
        sae = sae_lens.StandardSAE(cfg)
        with torch.no_grad():
            for p in sae.parameters():
                p.normal_(std=0.2)
        saes.append(sae)
    eig = bl.eigendecompose(model, L, directions())
    with bl.attach_eigenvectors(model, L, eig):
        logits, cache = model.run_with_cache_with_saes(tokens(), saes=saes)
    for sae in saes:  # hook_post resolves to the bridge's own name, out.hook_in
        assert model.get_sae_hook_name(sae) in cache.cache_dict
    assert model.get_sae_hook_name(saes[1]) == f"blocks.{L}.mlp.out.hook_in.hook_sae_acts_post"
    # reference: the same splice by hand with plain hooks on the plain bridge
    mlp = model.blocks[L].mlp
    x_sae = saes[0](cache[model.get_sae_hook_name(saes[0], "hook_sae_input")])
    torch.testing.assert_close(cache[f"blocks.{L}.mlp.hook_pre"], x_sae @ mlp.W_gate + mlp.b_gate)
    torch.testing.assert_close(cache[f"blocks.{L}.mlp.hook_eig"], eig.activations(x_sae))
    hooks = [(sae.cfg.metadata.hook_name, lambda t, hook, sae=sae: sae(t)) for sae in saes]
    with torch.no_grad():  # a fresh bridge: SAELens 6.54 leaves run_with_hooks inert after run_with_saes
        expected = boot(path, compat=True).run_with_hooks(tokens(), fwd_hooks=hooks)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert model.blocks[L].mlp.eigen is None


class _Metadata(dict):
    """Dict-style stand-in for SAELens' SAEMetadata (``.hook_name``, ``.get``), so this runs without SAELens."""

    __getattr__ = dict.get


def _sae(hook_name, record=None):
    from types import SimpleNamespace

    meta = _Metadata(hook_name=hook_name)
    if record is not None:
        meta[METADATA_KEY] = record
    return SimpleNamespace(cfg=SimpleNamespace(metadata=meta))


def test_processing_signature_reads_fold_ln_off_the_model(folders):
    path, _ = folders["bilinear"]
    raw, processed = boot(path, False), boot(path, True)
    assert processing_signature(raw) == {"fold_ln": False} and processing_signature(processed) == {"fold_ln": True}
    # what the signature stands for: hook_in differs exactly by ln2's weight
    hook = f"blocks.{L}.mlp.hook_in"
    _, c_raw = raw.run_with_cache(tokens(), names_filter=hook)
    _, c_proc = processed.run_with_cache(tokens(), names_filter=hook)
    w = raw.blocks[L].ln2.original_component.weight.detach()
    assert not torch.allclose(w, torch.ones_like(w))
    torch.testing.assert_close(c_raw[hook], c_proc[hook] * w, rtol=1e-5, atol=1e-6)
    if has_hooked_transformer():
        assert processing_signature(bl.load_pretrained(path)) == {"fold_ln": True}
        assert processing_signature(bl.load_pretrained(path, processing=False)) == {"fold_ln": False}


def test_check_processing_refuses_an_sae_trained_with_other_processing(folders):
    raw = boot(folders["bilinear"][0], False)
    hook_in, hook_out = f"blocks.{L}.mlp.hook_in", f"blocks.{L}.hook_mlp_out"
    with pytest.raises(ValueError, match=r"trained on a model with fold_ln .* this model is without fold_ln.*"
                                         r"enable_compatibility_mode"):
        check_processing(raw, _sae(hook_in, {"fold_ln": True}), "input SAE")
    check_processing(raw, _sae(hook_in, {"fold_ln": False}))  # same processing
    check_processing(raw, _sae(hook_in))  # no record (an SAE from elsewhere)
    check_processing(raw, _sae(hook_out, {"fold_ln": True}))  # fold_ln does not change hook_mlp_out


@pytest.mark.skipif(has_hooked_transformer(), reason="checks the TransformerLens 4.x refusal")
def test_load_pretrained_on_transformer_lens_4_points_to_the_bridge(folders):
    with pytest.raises(bl.CheckpointError, match=r"no longer has; use TransformerBridge.boot_transformers\(path\)"):
        bl.load_pretrained(folders["bilinear"][0])


def test_load_bridge_is_boot_plus_compatibility_mode(folders, tmp_path):
    from tests.conftest import make_tokenizer

    from bilinear_lens.bridge import load_bridge

    path, hf = folders["bias"]
    processed, raw = load_bridge(path, device="cpu"), load_bridge(path, processing=False, device="cpu")
    assert processing_signature(processed) == {"fold_ln": True} and processing_signature(raw) == {"fold_ln": False}
    assert isinstance(processed.blocks[L].mlp, BilinearMLPBridge) and not processed.training
    for model, compat in ((processed, True), (raw, False)):
        torch.testing.assert_close(logprobs(model, tokens()), logprobs(boot(path, compat), tokens()), rtol=0, atol=0)
        assert (logprobs(model, tokens()) - logprobs(hf, tokens())).abs().max() <= 1e-4
    make_llama_dir(tmp_path / "no-tokenizer", tokenizer=False)
    with pytest.raises(bl.CheckpointError, match="has no tokenizer files.*save the tokenizer into the folder or pass "
                                                 "tokenizer=") as err:
        load_bridge(tmp_path / "no-tokenizer")
    assert "\n" not in str(err.value)
    model = load_bridge(tmp_path / "no-tokenizer", device="cpu", tokenizer=make_tokenizer(101))
    assert (logprobs(model, tokens()) - logprobs(make_llama_dir(tmp_path / "again", tokenizer=False),
                                                 tokens())).abs().max() <= 1e-4
    with pytest.raises(bl.CheckpointError, match="is a file"):
        load_bridge(tmp_path / "no-tokenizer" / "config.json")
