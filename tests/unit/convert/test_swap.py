"""The annealed gate and the MLP swaps: exact at beta = 1 (SwiGLU) and beta = 0 (bilinear)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer

from bilinear_lens import BilinearMLP
from bilinear_lens.convert.annealed_mlp import AnnealedGateMLP, annealed_gate
from bilinear_lens.convert.swap import check_convertible, convert_to_bilinear, finalize_bilinear, set_beta, swap_to_annealed
from bilinear_lens.training.optim import freeze_biases
from bilinear_lens.training.speedups import restore_attention, use_sdpa
from tests.conftest import tiny_cfg


def tiny_swiglu(seed: int = 0) -> HookedTransformer:
    torch.manual_seed(seed)
    model = HookedTransformer(tiny_cfg(act_fn="silu", n_key_value_heads=2, d_vocab=512)).eval()
    with torch.no_grad():  # HookedTransformer's default init is tiny; make the MLPs matter
        for b in model.blocks:
            for w in (b.mlp.W_in, b.mlp.W_gate, b.mlp.W_out):
                w.normal_(0, 0.3)
    return model


def test_annealed_gate_endpoints_and_formula():
    g = torch.randn(1000) * 4
    assert torch.equal(annealed_gate(g, 1.0), F.silu(g))
    assert torch.equal(annealed_gate(g, 0.0), g)
    # the generic formula agrees with both special cases (0.5 * 2 is exact in floating point)
    assert torch.equal((2.0 - 0.0) * g * torch.sigmoid(0.0 * g), g)
    assert torch.allclose((2.0 - 1.0) * g * torch.sigmoid(g), F.silu(g), atol=1e-6)
    b = 0.3
    assert torch.allclose(annealed_gate(g, b), (2 - b) * g * torch.sigmoid(b * g))


def test_swap_at_beta_one_is_the_swiglu_model():
    model = tiny_swiglu()
    tokens = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        ref = model(tokens)
        swap_to_annealed(model, beta=1.0)
        assert all(isinstance(b.mlp, AnnealedGateMLP) for b in model.blocks)
        assert torch.allclose(model(tokens), ref, atol=1e-5)
        set_beta(model, 0.0)
        assert (model(tokens) - ref).abs().max() > 1e-2  # the gate really changed
    # hooks of the new blocks are registered (setup() was called)
    assert model.hook_dict["blocks.1.mlp.hook_post"] is model.blocks[1].mlp.hook_post


def test_finalize_at_beta_zero_is_exact_bilinear():
    model = swap_to_annealed(tiny_swiglu(), beta=1.0)
    tokens = torch.randint(0, 512, (2, 12))
    with pytest.raises(ValueError, match="beta"):
        finalize_bilinear(model)  # beta = 1: not bilinear yet
    set_beta(model, 0.0)
    with torch.no_grad():
        annealed = model(tokens)
        finalize_bilinear(model)
        bilinear = model(tokens)
    assert all(type(b.mlp) is BilinearMLP for b in model.blocks)
    assert model.cfg.act_fn == "bilinear"
    assert torch.equal(bilinear, annealed)  # the same arithmetic, bit for bit
    assert "blocks.0.mlp.hook_eig" in model.hook_dict
    # the plain swap gives the same model in one call
    plain = convert_to_bilinear(tiny_swiglu())
    with torch.no_grad():
        assert torch.allclose(plain(tokens), bilinear, atol=1e-5)


def test_frozen_biases_cover_attention_mlp_and_unembed():
    model = tiny_swiglu()
    names = freeze_biases(swap_to_annealed(model))
    assert "unembed.b_U" in names and "blocks.0.attn.b_O" in names and "blocks.0.mlp.b_gate" in names
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in names)
    assert all(p.requires_grad for n, p in model.named_parameters() if n not in names)


def test_already_bilinear_and_non_gated_models_are_refused(tiny_bilinear):
    with pytest.raises(ValueError, match="already bilinear"):
        check_convertible(tiny_bilinear)
    torch.manual_seed(0)
    gelu = HookedTransformer(tiny_cfg(act_fn="gelu", gated_mlp=False))
    with pytest.raises(ValueError, match="no SwiGLU MLP"):
        check_convertible(gelu)


def test_sdpa_fast_path_matches_transformer_lens_attention():
    model = tiny_swiglu()
    tokens = torch.randint(0, 512, (3, 16))
    with torch.no_grad():
        ref = model(tokens)
        assert use_sdpa(model) == 2
        fast = model(tokens)
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
        restore_attention(model)
        assert torch.equal(model(tokens), ref)
    assert torch.allclose(fast, ref, atol=1e-5)
    assert cache["blocks.0.attn.hook_z"].shape == (3, 16, 4, 8)
