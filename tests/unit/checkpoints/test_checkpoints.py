"""Checkpoints: local HF Llama folders <-> HookedTransformer, parity with Hugging Face transformers."""

from __future__ import annotations

import json
import os

import pytest
import torch
from tests.conftest import HOOKED, NO_HOOKED

if not HOOKED:  # every test here loads or builds a HookedTransformer
    pytest.skip(NO_HOOKED, allow_module_level=True)
from tests.conftest import make_tokenizer, tiny_cfg
from transformer_lens import HookedTransformer
from transformers import AutoModelForCausalLM

import bilinear_lens
from bilinear_lens import BilinearMLP, CheckpointError, save_pretrained

TOL = 1e-4  # max |log-prob difference|, float32
TOKENS = torch.randint(3, 101, (2, 16), generator=torch.Generator().manual_seed(0))


def logprobs(model, tokens=TOKENS):
    with torch.no_grad():
        out = model(tokens)
    return (out.logits if hasattr(out, "logits") else out).log_softmax(-1)


def max_diff(a, b):
    return (logprobs(a) - logprobs(b)).abs().max().item()


@pytest.mark.parametrize("mlp_bias", [False, True])
@pytest.mark.parametrize("n_kv", [2, 4])  # grouped-query and plain attention
@pytest.mark.parametrize("fold_ln", [True, False])
def test_bilinear_parity_with_hf(llama_dir, mlp_bias, n_kv, fold_ln):
    path, hf = llama_dir("bilinear-llama", mlp_bias=mlp_bias, n_kv=n_kv)  # "llama" in the path on purpose
    model = HookedTransformer.from_pretrained(str(path), fold_ln=fold_ln)
    assert all(isinstance(b.mlp, BilinearMLP) for b in model.blocks)
    assert model.cfg.normalization_type == ("RMSPre" if fold_ln else "RMS")
    if mlp_bias:
        assert torch.equal(model.blocks[1].mlp.b_gate, hf.model.layers[1].mlp.gate_proj.bias)
    assert max_diff(model, hf) <= TOL


def test_no_processing_and_options(llama_dir):
    path, hf = llama_dir("plain", mlp_bias=True)
    raw = HookedTransformer.from_pretrained_no_processing(str(path))
    assert torch.equal(raw.blocks[0].ln2.w, hf.model.layers[0].post_attention_layernorm.weight)
    assert max_diff(raw, hf) <= TOL
    short = HookedTransformer.from_pretrained(str(path), first_n_layers=1, n_ctx=16, dtype="bfloat16")
    assert short.cfg.n_layers == 1 and short.cfg.n_ctx == 16 and short.W_E.dtype == torch.bfloat16
    tok = make_tokenizer(101)
    given = HookedTransformer.from_pretrained(str(path), hf_model=hf, tokenizer=tok)
    assert given.tokenizer.name_or_path == tok.name_or_path and max_diff(given, hf) <= TOL


def test_real_swiglu_checkpoint(shared):
    path = shared("models", "stories260k")
    hf = AutoModelForCausalLM.from_pretrained(str(path))
    for fold_ln in (True, False):
        model = HookedTransformer.from_pretrained(str(path), fold_ln=fold_ln)
        assert model.cfg.act_fn == "silu" and not isinstance(model.blocks[0].mlp, BilinearMLP)
        tokens = model.to_tokens("Once upon a time, there was a little girl named Lily.")
        assert tokens[0, :5].tolist() == [1, 403, 407, 261, 378]
        assert (logprobs(model, tokens) - logprobs(hf, tokens)).abs().max().item() <= TOL


def test_round_trip_through_save_pretrained(tmp_path):
    torch.manual_seed(3)
    model = HookedTransformer(tiny_cfg(d_vocab=101, n_key_value_heads=2), tokenizer=make_tokenizer(101)).eval()
    with torch.no_grad():
        for b in model.blocks:
            for p in (b.mlp.b_in, b.mlp.b_gate, b.mlp.b_out, b.ln1.w, b.ln2.w):
                p.add_(torch.randn_like(p) * 0.2)
    out = save_pretrained(model, tmp_path / "bilinear-model")
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == "linear" and config["mlp_bias"] is True
    assert config["architectures"] == ["LlamaForCausalLM"]
    hf = AutoModelForCausalLM.from_pretrained(str(out))  # plain transformers, no remote code
    assert max_diff(model, hf) <= TOL
    reloaded = HookedTransformer.from_pretrained(str(out))
    assert max_diff(model, reloaded) <= TOL and reloaded.tokenizer is not None
    # a processed (fold_ln, center_unembed) model saves too, with the same log-probs
    save_pretrained(reloaded, tmp_path / "processed")
    assert max_diff(model, AutoModelForCausalLM.from_pretrained(str(tmp_path / "processed"))) <= TOL
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folders left


def test_save_overwrites_atomically(tmp_path, tiny_bilinear):
    target = tmp_path / "m"
    save_pretrained(tiny_bilinear, target)
    first = (target / "model.safetensors").read_bytes()
    with torch.no_grad():
        tiny_bilinear.blocks[0].mlp.W_in.mul_(2)
    with pytest.raises(CheckpointError, match="overwrite=True"):
        save_pretrained(tiny_bilinear, target)
    assert (target / "model.safetensors").read_bytes() == first
    save_pretrained(tiny_bilinear, target, overwrite=True)
    assert (target / "model.safetensors").read_bytes() != first
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_rejects_inexpressible_model(tmp_path):
    model = HookedTransformer(tiny_cfg(normalization_type="LN", positional_embedding_type="standard", final_rms=False))
    with pytest.raises(CheckpointError, match="normalization_type='LN'.*positional_embedding_type='standard'"):
        save_pretrained(model, tmp_path / "out")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("overrides, reason", [
    ({"use_normalization_before_and_after": True}, "use_normalization_before_and_after=True"),
    ({"d_vocab_out": 50}, "d_vocab_out=50 differs from d_vocab=97"),
])
def test_save_refuses_what_llama_cannot_express(tmp_path, overrides, reason):
    model = HookedTransformer(tiny_cfg(**overrides))
    with pytest.raises(CheckpointError, match=reason):
        save_pretrained(model, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_missing_config_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        HookedTransformer.from_pretrained(str(tmp_path / "empty"))
    with pytest.raises(CheckpointError, match="has no config.json"):
        bilinear_lens.load_pretrained(tmp_path / "empty")


def test_unsupported_architecture_is_named(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"], "model_type": "foo"}))
    with pytest.raises(CheckpointError, match=r"FooForCausalLM cannot be loaded.*LlamaForCausalLM"):
        HookedTransformer.from_pretrained(str(folder))


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete"])
def test_corrupt_weights_are_a_clear_error(llama_dir, damage):
    path, _ = llama_dir("broken")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        weights.write_bytes(data[:8] + b"\xff" * 64 + data[72:])
    else:
        weights.unlink()
    before = sorted(os.listdir(path))
    with pytest.raises(CheckpointError, match="truncated or corrupt|no weights|unreadable"):
        HookedTransformer.from_pretrained(str(path))
    assert sorted(os.listdir(path)) == before


def test_swiglu_with_mlp_bias_rejected(llama_dir):
    path, _ = llama_dir("swiglu-bias", hidden_act="silu", mlp_bias=True)
    with pytest.raises(CheckpointError, match="mlp_bias=true cannot be represented"):
        HookedTransformer.from_pretrained(str(path))


def test_hooked_sae_transformer_and_bridge(llama_dir):
    from sae_lens import HookedSAETransformer
    from transformer_lens.model_bridge import TransformerBridge

    path, hf = llama_dir("bridge-llama", mlp_bias=True)
    sae_model = HookedSAETransformer.from_pretrained(str(path))
    assert isinstance(sae_model.blocks[0].mlp, BilinearMLP) and max_diff(sae_model, hf) <= TOL
    bridge = TransformerBridge.boot_transformers(str(path))
    bridge.enable_compatibility_mode()  # stock TransformerLens would substitute SiLU here
    assert max_diff(bridge, hf) <= TOL
