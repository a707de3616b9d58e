"""The authors' published TopK SAEs (tdooms/<model>-scope) as exact SAELens SAEs, offline.

Each SAE folder is written in the authors' format with random weights and checked against the
authors' encode/decode written out here (top-k by value, no ReLU).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import torch
from safetensors.torch import save_file

from tests.authors_format import reference_forward, wordpiece_tokenizer, write_authors_model  # noqa: E402

import bilinear_lens  # noqa: E402

MODEL = dict(n_layer=2, n_head=2, d_model=16, d_hidden=24, vocab=40)


@pytest.fixture(autouse=True)
def _quiet(tmp_path, monkeypatch):
    monkeypatch.setenv("BILINEAR_LENS_CACHE", str(tmp_path / "cache"))
    warnings.filterwarnings("ignore", message=".*loaded without a tokenizer.*")


def write_authors_sae(path: Path, point=("mlp-in", 1), d_model: int = 16, expansion: int = 4, k: int = 5,
                      encoder_bias: bool = False, seed: int = 0, extra: Optional[Dict[str, Any]] = None,
                      extra_tensors: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    d_sae = expansion * d_model
    w_dec = torch.randn(d_model, d_sae, generator=g)
    w_dec = w_dec / w_dec.norm(dim=0, keepdim=True)  # unit-norm columns, as the authors keep them
    t = {"w_enc.weight": torch.randn(d_sae, d_model, generator=g) / math.sqrt(d_model), "w_dec.weight": w_dec,
         "b_dec": torch.randn(d_model, generator=g) * 0.3}
    if encoder_bias:
        t["w_enc.bias"] = torch.randn(d_sae, generator=g) - 3.0  # mostly negative: negative kept values
    t.update(extra_tensors or {})
    cfg = {"point": list(point), "target": list(point), "d_model": d_model, "expansion": expansion, "k": k,
           "n_ctx": 32, "encoder_bias": encoder_bias, "normalize_decoder": True, "lr": 1e-4, "in_batch": 32,
           "out_batch": 4096, "n_batches": 256, "n_buffers": 10, "val_steps": 100, "dead_thresh": 2,
           "normalize": None, "init_scale": 1.0, "bilinear_encoder": False, "token_lookup": False,
           "decoder_decay": 0.0, "tag": None, **(extra or {})}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file(t, str(path / "model.safetensors"))
    return path


def authors_encode(path: Path, x: torch.Tensor) -> torch.Tensor:
    """The authors' ``SAE.encode``: ``h = w_enc(x - b_dec)``; keep the k largest by value."""
    from safetensors.torch import load_file

    cfg, t = json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))
    h = (x - t["b_dec"]) @ t["w_enc.weight"].T + t.get("w_enc.bias", 0)
    mask = torch.zeros_like(h).scatter(-1, h.topk(cfg["k"], dim=-1).indices, 1.0)
    return h * mask


def authors_decode(path: Path, z: torch.Tensor) -> torch.Tensor:
    from safetensors.torch import load_file

    t = load_file(str(path / "model.safetensors"))
    return z @ t["w_dec.weight"].T + t["b_dec"]


@pytest.mark.parametrize("encoder_bias", [False, True])
def test_encode_decode_match_the_authors_including_negative_kept_values(tmp_path, encoder_bias):
    from sae_lens import SAE

    folder = write_authors_sae(tmp_path / "sae", k=40 if not encoder_bias else 20, encoder_bias=encoder_bias)
    sae = bilinear_lens.load_sae(str(folder))
    assert isinstance(sae, SAE) and sae.cfg.architecture() == "bilinear_lens_topk"
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
    z_ref = authors_encode(folder, x)
    kept = z_ref[z_ref != 0]
    assert (kept < 0).any(), "the test must exercise negative kept values"
    z = sae.encode(x)
    assert (z - z_ref).abs().max() <= 1e-5
    assert (sae.decode(z) - authors_decode(folder, z_ref)).abs().max() <= 1e-5
    assert (sae(x) - authors_decode(folder, z_ref)).abs().max() <= 1e-5
    # SAELens' own TopK (ReLU on the kept values) would not be exact on these SAEs
    from sae_lens.saes.topk_sae import TopK

    assert (TopK(sae.cfg.k)(x @ sae.W_enc + sae.b_enc - sae.b_dec @ sae.W_enc) - z_ref).abs().max() > 1e-3


@pytest.mark.parametrize("point,hook", [
    ("mlp-in", "blocks.1.mlp.hook_in"), ("resid-mid", "blocks.1.hook_resid_mid"),
    ("mlp-out", "blocks.1.hook_mlp_out"), ("resid-pre", "blocks.1.hook_resid_pre"),
    ("resid-post", "blocks.1.hook_resid_post"), ("attn-out", "blocks.1.hook_attn_out"),
])
def test_hook_names_and_activations_are_the_authors(tmp_path, point, hook):
    """On the loaded model, the SAE at its hook computes the authors' SAE on the authors' tensor."""
    model_dir = write_authors_model(tmp_path / "model", scale_attn=True, **MODEL)
    model = bilinear_lens.load_pretrained(str(model_dir))
    folder = write_authors_sae(tmp_path / "sae", point=(point.replace("-", "_") if point == "mlp-in" else point, 1))
    sae = bilinear_lens.load_sae(str(folder), model=model)
    assert sae.cfg.metadata.hook_name == hook and hook in model.hook_dict
    ids = torch.randint(0, MODEL["vocab"], (2, 9), generator=torch.Generator().manual_seed(4))
    ref: Dict[str, torch.Tensor] = {}
    reference_forward(model_dir, ids, cache=ref)
    authors_x = ref[f"1.{point.replace('-', '_')}"].float()
    _, cache = model.run_with_cache(ids)
    s = 0.5 if point == "attn-out" else 1.0  # 1/sqrt(2 n_layer): the scale folded into W_O
    assert (cache[hook] - s * authors_x).abs().max() <= 1e-4
    z_ref = authors_encode(folder, authors_x)
    assert (sae.encode(cache[hook]) - z_ref).abs().max() <= 1e-4
    assert (sae.decode(z_ref) - s * authors_decode(folder, z_ref)).abs().max() <= 1e-5


def test_attn_out_without_a_scale_is_refused(tmp_path):
    folder = write_authors_sae(tmp_path / "sae", point=("attn-out", 0))
    with pytest.raises(ValueError, match="attn-out SAE .* pass model= .* or attn_scale="):
        bilinear_lens.load_sae(str(folder))
    assert bilinear_lens.load_sae(str(folder), attn_scale=0.25).cfg.metadata.attn_scale == 0.25


@pytest.mark.parametrize("extra,key", [({"passthrough": [0, 3]}, "passthrough"),
                                       ({"bilinear_encoder": True}, "bilinear_encoder"),
                                       ({"token_lookup": True}, "token_lookup"),
                                       ({"normalize": 2.0}, "normalize"),
                                       ({"target": ["mlp-out", 1]}, "target")])
def test_inexpressible_saes_are_refused_naming_the_key(tmp_path, extra, key):
    folder = write_authors_sae(tmp_path / "sae", extra=extra)
    with pytest.raises(ValueError) as err:
        bilinear_lens.load_sae(str(folder))
    assert f"SAE config key {key}=" in str(err.value) and "\n" not in str(err.value)


def test_tensor_mismatches_are_refused(tmp_path):
    folder = write_authors_sae(tmp_path / "a", extra_tensors={"w_enc.bias": torch.zeros(64)})
    with pytest.raises(ValueError, match=r"tensor w_enc\.bias is unexpected"):
        bilinear_lens.load_sae(str(folder))
    folder = write_authors_sae(tmp_path / "b", extra={"encoder_bias": True})
    with pytest.raises(ValueError, match=r"tensor w_enc\.bias is missing"):
        bilinear_lens.load_sae(str(folder))


def test_import_sae_writes_a_saelens_folder_that_load_from_disk_reads(tmp_path):
    from sae_lens import SAE

    from bilinear_lens.cli import main

    folder = write_authors_sae(tmp_path / "sae", k=40, encoder_bias=True)
    out = tmp_path / "saelens"
    assert main(["import-sae", str(folder), "--out", str(out)]) == 0
    assert (out / "cfg.json").is_file() and (out / "sae_weights.safetensors").is_file()
    assert json.loads((out / "cfg.json").read_text())["architecture"] == "bilinear_lens_topk"
    sae = SAE.load_from_disk(str(out))
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(5))
    assert (sae.encode(x) - authors_encode(folder, x)).abs().max() <= 1e-5
    assert sae.cfg.metadata.hook_name == "blocks.1.mlp.hook_in"
    assert main(["import-sae", str(folder), "--out", str(out)]) == 1  # already there: refused
    assert main(["import-sae", str(folder), "--out", str(out), "--resume"]) == 0
    bad = write_authors_sae(tmp_path / "bad", extra={"passthrough": [1]})
    assert main(["import-sae", str(bad), "--out", str(tmp_path / "never")]) == 1
    assert not (tmp_path / "never").exists()


def test_saes_attach_to_hooked_sae_transformer_and_compare_checks(tmp_path):
    from sae_lens import HookedSAETransformer

    from bilinear_lens.sae.compare import check_sae

    model_dir = write_authors_model(tmp_path / "model", **MODEL)
    model = HookedSAETransformer.from_pretrained(str(model_dir))
    sae_in = bilinear_lens.load_sae(str(write_authors_sae(tmp_path / "in", point=("mlp-in", 1))))
    sae_out = bilinear_lens.load_sae(str(write_authors_sae(tmp_path / "out", point=("mlp-out", 1))))
    sae_mid = bilinear_lens.load_sae(str(write_authors_sae(tmp_path / "mid", point=("resid-mid", 1))))
    ids = torch.randint(0, MODEL["vocab"], (1, 8), generator=torch.Generator().manual_seed(6))
    _, cache = model.run_with_cache_with_saes(ids, saes=[sae_in, sae_out, sae_mid])
    assert "blocks.1.mlp.hook_in.hook_sae_acts_post" in cache
    assert "blocks.1.hook_resid_mid.hook_sae_acts_post" in cache
    check_sae(model, 1, sae_in, "in")  # accepted as compare's input SAE
    check_sae(model, 1, sae_out, "out")
    with pytest.raises(ValueError, match=r"blocks\.1\.hook_resid_mid.*blocks\.1\.mlp\.hook_in"):
        check_sae(model, 1, sae_mid, "in")  # resid-mid is not the MLP input: refused (docs/published_models.md)


def test_resid_mid_sae_is_not_an_mlp_in_sae(tmp_path):
    """Why compare refuses resid-mid SAEs: the weightless norm rescales each token (x = r / rho), and
    the authors' SAE of r is not an SAE of x: encode(r / rho) != encode(r) / rho once b_dec != 0."""
    folder = write_authors_sae(tmp_path / "mid", point=("resid-mid", 1))
    sae = bilinear_lens.load_sae(str(folder))
    r = torch.randn(6, 16, generator=torch.Generator().manual_seed(7)) * 5
    rho = r.pow(2).mean(-1, keepdim=True).add(1e-8).sqrt()
    assert (sae.encode(r / rho) - sae.encode(r) / rho).abs().max() > 1e-3
    # with b_dec = 0 and no encoder bias top-k commutes with a positive per-token scale
    with torch.no_grad():
        sae.b_dec.zero_()
    assert (sae.encode(r / rho) - sae.encode(r) / rho).abs().max() <= 1e-5


def test_hub_sae_offline_not_cached_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError) as err:
        bilinear_lens.load_sae("tdooms/ts-medium-scope/5-mlp-in-x4-k30")
    assert "\n" not in str(err.value) and "Hugging Face" in str(err.value)


def test_compare_runs_on_an_authors_model_with_imported_saes(tmp_path, capsys):
    """`bilinear-lens compare` takes the authors' model folder and import-sae folders (mlp-in, mlp-out),
    and refuses a resid-mid input SAE with a one-line error naming both hooks."""
    import random

    from bilinear_lens.cli import main

    tok = wordpiece_tokenizer(tmp_path / "model")
    write_authors_model(tmp_path / "model", **{**MODEL, "vocab": tok.get_vocab_size(), "n_ctx": 64})
    for name, point in (("in", "mlp-in"), ("out", "mlp-out"), ("mid", "resid-mid")):
        write_authors_sae(tmp_path / f"a-{name}", point=(point, 1), k=8, seed=len(name))
        assert main(["import-sae", str(tmp_path / f"a-{name}"), "--out", str(tmp_path / name)]) == 0
    rng = random.Random(0)
    words = "once upon a time there was a little girl named lily she loved 3 red balloons".split()
    data = tmp_path / "val.txt"
    data.write_text("\n<|endoftext|>\n".join(" ".join(rng.choice(words) for _ in range(60)) for _ in range(40)))
    common = ["compare", "--model", str(tmp_path / "model"), "--layer", "1", "--sae-out", str(tmp_path / "out"),
              "--data", str(data), "--rows", "8", "--context", "32", "--ks", "1,2"]
    assert main(common + ["--sae-in", str(tmp_path / "in"), "--out", str(tmp_path / "cmp")]) == 0
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert metrics  # written by compare's own pipeline
    capsys.readouterr()
    assert main(common + ["--sae-in", str(tmp_path / "mid"), "--out", str(tmp_path / "cmp2")]) == 1
    err = capsys.readouterr().err.strip()
    assert "blocks.1.hook_resid_mid" in err and "blocks.1.mlp.hook_in" in err and "\n" not in err
