"""The registration: one patch table verified at registration, the adapter, the entry point (TL 3.9 and 4.x)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformer_lens.factories.architecture_adapter_factory import (
    SUPPORTED_ARCHITECTURES,
    ArchitectureAdapterFactory,
)
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

import bilinear_lens as bl
from bilinear_lens import registration as reg
from bilinear_lens.bridge import BilinearLlamaArchitectureAdapter


@pytest.fixture
def unregistered():
    """Start a test unregistered; always re-register at the end (with the real table)."""
    reg.unregister()
    yield
    reg.unregister()
    reg.register()


def test_every_applicable_target_resolves_and_is_wrapped():
    assert reg.is_registered()
    applicable = reg.applicable_patches()
    assert [p.needs == "hooked" for p in reg.PATCHES].count(True) == 4
    if reg.has_hooked_transformer():
        assert {p.target for p in applicable} >= {
            "transformer_lens.loading_from_pretrained:get_official_model_name",
            "transformer_lens.factories.mlp_factory:MLPFactory.create_mlp"}
    else:  # TransformerLens 4 removed the HookedTransformer stack: nothing of it is patched
        assert all(p.needs != "hooked" for p in applicable)
    for patch in applicable:
        owner, name, current = reg._resolve(patch)
        assert getattr(current, "__wrapped__", getattr(getattr(current, "__func__", None), "__wrapped__", None)), patch.target
    assert reg.transformer_lens_version() in reg.describe()


@pytest.mark.parametrize("target", ["hooked", "bridge"])
def test_removed_patch_target_raises_naming_the_version(unregistered, monkeypatch, target):
    """Simulate an upstream move: the attribute is gone. register() refuses and changes nothing."""
    if target == "hooked":
        if not reg.has_hooked_transformer():
            pytest.skip("TransformerLens 4.x: no HookedTransformer target applies (the bridge one does)")
        import transformer_lens.loading_from_pretrained as loading

        monkeypatch.delattr(loading, "get_official_model_name")
        expected = "transformer_lens.loading_from_pretrained:get_official_model_name"
    else:  # the row that applies on every version: boot_transformers of the authors' format
        from transformer_lens.model_bridge import TransformerBridge

        monkeypatch.delattr(TransformerBridge, "boot_transformers")
        expected = "transformer_lens.model_bridge.sources.transformers:TransformerBridge.boot_transformers"
    assert expected in {p.target for p in reg.applicable_patches()}
    with pytest.raises(reg.RegistrationError) as err:
        reg.register()
    message = str(err.value)
    assert expected in message and f"TransformerLens {reg.transformer_lens_version()}" in message
    # all or nothing: no activation, adapter or patch was installed
    assert not reg.is_registered() and "bilinear" not in SUPPORTED_ACTIVATIONS
    assert ArchitectureAdapterFactory._adapters["LlamaForCausalLM"] is SUPPORTED_ARCHITECTURES["LlamaForCausalLM"]


def test_missing_patch_module_raises_too(unregistered, monkeypatch):
    ghost = reg.Patch("transformer_lens.no_such_module", "anything", lambda o: o, "always", "test")
    monkeypatch.setattr(reg, "PATCHES", (ghost,))
    with pytest.raises(reg.RegistrationError, match="transformer_lens.no_such_module:anything .* missing in TransformerLens"):
        reg.register()


def test_register_adapter_and_unregister_restores_the_stock_adapter(unregistered):
    from transformer_lens.model_bridge import TransformerBridge

    assert ArchitectureAdapterFactory._adapters["LlamaForCausalLM"] is SUPPORTED_ARCHITECTURES["LlamaForCausalLM"]
    stock_boot = TransformerBridge.__dict__["boot_transformers"]
    assert not hasattr(stock_boot.__func__, "__wrapped__")
    reg.register()
    reg.register()  # idempotent
    assert ArchitectureAdapterFactory._adapters["LlamaForCausalLM"] is BilinearLlamaArchitectureAdapter
    assert TransformerBridge.__dict__["boot_transformers"].__func__.__wrapped__ is stock_boot.__func__
    reg.unregister()
    assert TransformerBridge.__dict__["boot_transformers"] is stock_boot
    reg.register()
    assert SUPPORTED_ACTIVATIONS["bilinear"](torch.tensor([-2.0])).item() == -2.0


def test_entry_point_works_without_importing_bilinear_lens(tmp_path):
    """A fresh interpreter that never imports bilinear_lens: TransformerLens finds the adapter itself."""
    if not reg.entry_point_installed():
        pytest.skip("this environment's bilinear-lens metadata has no transformer_lens.architectures entry point "
                    "(pip install -e . installs it)")
    from tests.conftest import make_llama_dir

    make_llama_dir(tmp_path / "m", mlp_bias=True)
    script = textwrap.dedent(f"""
        import sys, warnings, torch
        warnings.simplefilter("ignore")
        from transformers import AutoModelForCausalLM
        from transformer_lens.model_bridge import TransformerBridge
        assert "bilinear_lens" not in sys.modules
        bridge = TransformerBridge.boot_transformers({str(tmp_path / "m")!r}, device="cpu")
        bridge.enable_compatibility_mode()
        hf = AutoModelForCausalLM.from_pretrained({str(tmp_path / "m")!r}).eval()
        toks = torch.tensor([[1, 5, 6, 7, 8]])
        with torch.no_grad():
            diff = (bridge(toks).log_softmax(-1) - hf(toks).logits.log_softmax(-1)).abs().max().item()
        print(type(bridge.blocks[0].mlp).__name__, diff)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    name, diff = out.stdout.split()[-2:]
    assert name == "BilinearMLPBridge" and float(diff) <= 1e-4


@pytest.mark.skipif(not reg.has_hooked_transformer(), reason="TransformerLens 4.x has no HookedTransformer")
def test_bilinear_act_fn_without_gated_mlp_is_refused():
    from tests.conftest import tiny_cfg
    from transformer_lens import HookedTransformer

    with pytest.raises(ValueError, match="act_fn='bilinear' with gated_mlp=False .* set gated_mlp=True"):
        HookedTransformer(tiny_cfg(gated_mlp=False))
    assert isinstance(HookedTransformer(tiny_cfg()).blocks[0].mlp, bl.BilinearMLP)


def test_removed_extension_point_raises_too(unregistered, monkeypatch):
    monkeypatch.delattr(ArchitectureAdapterFactory, "register_adapter")
    with pytest.raises(reg.RegistrationError, match=r"cannot use transformer_lens.factories.architecture_adapter_factory:"
                                                     r"ArchitectureAdapterFactory.register_adapter .* missing in "
                                                     r"TransformerLens \d"):
        reg.register()
    assert not reg.is_registered() and "bilinear" not in SUPPORTED_ACTIVATIONS
