"""The bilinear block and its registration with TransformerLens."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import HOOKED, NO_HOOKED

if not HOOKED:  # every test here loads or builds a HookedTransformer
    pytest.skip(NO_HOOKED, allow_module_level=True)
import transformer_lens.loading_from_pretrained as loading
from tests.conftest import tiny_cfg
from transformer_lens import HookedTransformer, HookedTransformerConfig, utils
from transformer_lens.components.mlps.gated_mlp import GatedMLP
from transformer_lens.factories.mlp_factory import MLPFactory
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

import bilinear_lens
from bilinear_lens import BilinearMLP
from bilinear_lens.registration import is_registered, register, unregister

MLP_HOOKS = ("hook_in", "hook_pre", "hook_pre_linear", "hook_post")


def test_config_accepts_bilinear_and_linear():
    for act in ("bilinear", "linear"):
        model = HookedTransformer(tiny_cfg(act_fn=act))
        assert all(isinstance(b.mlp, BilinearMLP) for b in model.blocks)


def test_swiglu_config_still_builds_gated_mlp():
    model = HookedTransformer(tiny_cfg(act_fn="silu"))
    assert all(type(b.mlp) is GatedMLP for b in model.blocks)


def test_forward_formula_with_branch_biases():
    torch.manual_seed(0)
    mlp = BilinearMLP.from_dims(8, 16, dtype=torch.float64)
    with torch.no_grad():
        for b in (mlp.b_in, mlp.b_gate, mlp.b_out):
            b.normal_()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    expected = ((x @ mlp.W_gate + mlp.b_gate) * (x @ mlp.W_in + mlp.b_in)) @ mlp.W_out + mlp.b_out
    torch.testing.assert_close(mlp(x), expected, rtol=0, atol=1e-12)


def test_cache_has_every_mlp_hook_and_post_is_the_product(tiny_bilinear):
    tokens = torch.randint(0, 97, (2, 12))
    _, cache = tiny_bilinear.run_with_cache(tokens)
    for layer in range(tiny_bilinear.cfg.n_layers):
        for hook in MLP_HOOKS:
            assert f"blocks.{layer}.mlp.{hook}" in cache
        post = cache[f"blocks.{layer}.mlp.hook_post"]
        assert torch.equal(post, cache[f"blocks.{layer}.mlp.hook_pre"] * cache[f"blocks.{layer}.mlp.hook_pre_linear"])
        assert utils.get_act_name("post", layer) == f"blocks.{layer}.mlp.hook_post"
        # hook_in is the MLP's own input: ln2's output (after its weight)
        ln2_out = tiny_bilinear.blocks[layer].ln2(cache[f"blocks.{layer}.hook_resid_mid"])
        torch.testing.assert_close(cache[f"blocks.{layer}.mlp.hook_in"], ln2_out)


def test_register_is_idempotent_and_reversible():
    before = (MLPFactory.__dict__["create_mlp"], loading.get_official_model_name)
    register()
    register()
    assert (MLPFactory.__dict__["create_mlp"], loading.get_official_model_name) == before
    unregister()
    try:
        assert not is_registered()
        assert "bilinear" not in SUPPORTED_ACTIVATIONS and "linear" not in SUPPORTED_ACTIVATIONS
        assert MLPFactory.__dict__["create_mlp"].__func__.__module__ == "transformer_lens.factories.mlp_factory"
        with pytest.raises(AssertionError, match="act_fn"):
            HookedTransformerConfig(**{**tiny_cfg().to_dict(), "act_fn": "bilinear", "n_params": None})
    finally:
        register()
    assert is_registered() and "bilinear" in SUPPORTED_ACTIVATIONS


def test_official_names_resolve_as_before():
    assert loading.get_official_model_name("gpt2") == "gpt2"
    cfg = loading.get_pretrained_model_config("meta-llama/Llama-2-7b-hf")
    assert cfg.d_model == 4096 and cfg.act_fn == "silu"
    with pytest.raises(ValueError, match="not found"):
        loading.get_official_model_name("definitely-not-a-model-name")


def test_fold_ln_exact_for_layernorm_bilinear():
    """TransformerLens folds LN biases into b_in AND b_gate before the product: exact for BilinearMLP.

    (TransformerLens' weight processing itself rounds at ~1e-7 even in float64, for any MLP; a
    post-product ``b_in`` as in ``GatedMLP`` would be off by the size of the LN bias terms.)
    """
    torch.manual_seed(1)
    cfg = tiny_cfg(normalization_type="LN", positional_embedding_type="standard", final_rms=False,
                   dtype=torch.float64)
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln" in name or name.startswith("ln_final"):
                p.copy_(torch.randn_like(p) * 0.3 + (1 if name.endswith(".w") else 0))
    tokens = torch.randint(0, 97, (2, 10))
    before = model(tokens).log_softmax(-1)
    model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    assert model.cfg.normalization_type == "LNPre"
    assert any(b.mlp.b_gate.abs().max() > 0 for b in model.blocks)  # the LN bias really was folded
    torch.testing.assert_close(model(tokens).log_softmax(-1), before, rtol=0, atol=1e-5)


def test_hooked_sae_transformer_keeps_a_single_hook_in():
    from sae_lens import HookedSAETransformer

    model = HookedSAETransformer(tiny_cfg())
    calls = []
    tokens = torch.randint(0, 97, (1, 6))
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_in", lambda x, hook: calls.append(1))])
    assert calls == [1]
    assert isinstance(model.blocks[0].mlp, BilinearMLP)


def test_public_api_names():
    for name in ("eigendecompose", "interaction_matrices", "save_pretrained", "BilinearMLP", "load_pretrained"):
        assert hasattr(bilinear_lens, name)
    with pytest.raises(AttributeError):
        bilinear_lens.not_a_thing  # noqa: B018
