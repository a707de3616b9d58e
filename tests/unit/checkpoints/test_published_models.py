"""The authors' published bilinear models (tdooms/ts-medium, fw-*): loaded exactly, offline.

Every folder is written in the authors' exact format with random weights (tests/authors_format.py)
and checked against an independent plain-torch implementation of their forward pass.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.authors_format import ABSENT, reference_forward, wordpiece_tokenizer, write_authors_model  # noqa: E402

import bilinear_lens  # noqa: E402
from bilinear_lens.checkpoints import CheckpointError  # noqa: E402

SMALL = dict(n_layer=2, n_head=2, d_model=16, d_hidden=24, vocab=40)
LARGE = dict(n_layer=3, n_head=4, d_model=32, d_hidden=40, vocab=50)
TOL = 1e-4


@pytest.fixture(autouse=True)
def _tokenizer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BILINEAR_LENS_CACHE", str(tmp_path / "cache"))
    warnings.filterwarnings("ignore", message=".*loaded without a tokenizer.*")


def _ids(vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(seed))


def _load_paths():
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformer

    return {
        "HookedTransformer.from_pretrained": HookedTransformer.from_pretrained,
        "from_pretrained_no_processing": HookedTransformer.from_pretrained_no_processing,
        "HookedSAETransformer.from_pretrained": HookedSAETransformer.from_pretrained,
        "bilinear_lens.load_pretrained": bilinear_lens.load_pretrained,
    }


def _gap(model, folder: Path, ids: torch.Tensor, **ref_kw) -> float:
    with torch.no_grad():
        lp = model(ids).log_softmax(-1).double()
    return float((lp - reference_forward(folder, ids, **ref_kw)).abs().max())


@pytest.mark.parametrize("scale_attn,size,inv_freq", [(True, SMALL, True), (False, LARGE, False),
                                                       (ABSENT, SMALL, False), (ABSENT, LARGE, True)])
def test_every_load_path_matches_the_reference(tmp_path, scale_attn, size, inv_freq):
    folder = write_authors_model(tmp_path / "m", scale_attn=scale_attn, inv_freq=inv_freq, **size)
    ids = _ids(size["vocab"])
    expected_s = 1.0 if scale_attn is False else 1 / math.sqrt(2 * size["n_layer"])
    for name, load in _load_paths().items():
        model = load(str(folder))
        assert _gap(model, folder, ids) <= TOL, name
        info = bilinear_lens.published_info(model)
        assert info is not None and info.attn_scale == pytest.approx(expected_s), name
        assert info.scale_attn_key == (None if scale_attn is ABSENT else scale_attn) and not info.overridden
        assert type(model.blocks[0].mlp).__name__ == "BilinearMLP"
    # the scale matters: the model with the other choice is far from the reference
    other = bilinear_lens.load_pretrained(str(folder), scale_attn=scale_attn is False)
    assert _gap(other, folder, ids) > 1e-2


def test_scale_attn_override_is_exact_and_recorded(tmp_path):
    from transformer_lens import HookedTransformer

    folder = write_authors_model(tmp_path / "m", scale_attn=False, **SMALL)
    ids = _ids(SMALL["vocab"])
    for model in (bilinear_lens.load_pretrained(str(folder), scale_attn=True),
                  HookedTransformer.from_pretrained(str(folder), scale_attn=True)):
        assert _gap(model, folder, ids, scale_attn=True) <= TOL
        info = bilinear_lens.published_info(model)
        assert info.overridden and info.scale_attn and info.attn_scale == pytest.approx(0.5)
        assert model.published is info
    bilinear_lens.save_pretrained(bilinear_lens.load_pretrained(str(folder)), tmp_path / "llama")
    with pytest.raises(CheckpointError, match="scale_attn= applies to the authors' published format only"):
        bilinear_lens.load_pretrained(str(tmp_path / "llama"), scale_attn=True)


@pytest.mark.parametrize("gate", ["relu", "silu", "gelu"])
def test_glu_gates_load_as_the_matching_gated_mlp(tmp_path, gate):
    folder = write_authors_model(tmp_path / "m", gate=gate, **SMALL)
    ids = _ids(SMALL["vocab"])
    for name in ("HookedTransformer.from_pretrained", "from_pretrained_no_processing"):
        model = _load_paths()[name](str(folder))
        assert model.cfg.act_fn == gate and type(model.blocks[0].mlp).__name__ == "GatedMLP"
        assert _gap(model, folder, ids) <= TOL, name


@pytest.mark.parametrize("extra,key", [
    ({"gate": "tanh"}, "gate"),
    ({"normalization": False}, "normalization"),
    ({"normalization": [False, True, False]}, "normalization"),
    ({"attention2": True}, "attention2"),
    ({"bias": True}, "bias"),
    ({"norm_bias": True}, "norm_bias"),
    ({"bilinear": False}, "bilinear"),
    ({"scale_attn": "yes"}, "scale_attn"),
])
def test_inexpressible_variants_are_refused_naming_the_key(tmp_path, extra, key):
    from transformer_lens import HookedTransformer

    gate = extra.pop("gate", ABSENT)
    scale = extra.pop("scale_attn", ABSENT)
    folder = write_authors_model(tmp_path / "m", gate=gate, scale_attn=scale, extra=extra, **SMALL)
    for load in (bilinear_lens.load_pretrained, HookedTransformer.from_pretrained):
        with pytest.raises(CheckpointError) as err:
            load(str(folder))
        msg = str(err.value)
        assert f"config key {key}=" in msg and "\n" not in msg


def test_unknown_missing_or_odd_tensors_are_refused(tmp_path):
    cases = {
        "transformer.h.0.n2.norm.weight": dict(extra_tensors={"transformer.h.0.n2.norm.weight": torch.ones(16)}),
        "inv_freq": dict(extra_tensors={"transformer.h.0.attn.rotary.inv_freq": torch.ones(4),
                                        "transformer.h.1.attn.rotary.inv_freq": torch.ones(4)}),
    }
    for i, (needle, kw) in enumerate(cases.items()):
        folder = write_authors_model(tmp_path / f"m{i}", **SMALL, **kw)
        with pytest.raises(CheckpointError, match=needle.replace(".", r"\.")):
            bilinear_lens.load_pretrained(str(folder))
    folder = write_authors_model(tmp_path / "short", **SMALL)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "n_layer": 3}))
    with pytest.raises(CheckpointError, match=r"lacks tensor transformer\.h\.2\.attn\.qkv\.weight"):
        bilinear_lens.load_pretrained(str(folder))


def test_format_is_detected_from_contents_not_the_name(tmp_path):
    """A folder named like a Llama and one named like the Hub repo load by what they contain."""
    from bilinear_lens.checkpoints.authors import is_authors_folder

    folder = write_authors_model(tmp_path / "llama-7b-hf", **SMALL)
    assert is_authors_folder(folder) and _gap(bilinear_lens.load_pretrained(str(folder)), folder,
                                              _ids(SMALL["vocab"])) <= TOL
    llama = tmp_path / "tdooms-ts-medium"
    bilinear_lens.save_pretrained(bilinear_lens.load_pretrained(str(folder)), llama)
    assert not is_authors_folder(llama)
    assert bilinear_lens.published_info(bilinear_lens.load_pretrained(str(llama))) is None


def _fake_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    """A Hugging Face hub cache holding ``folder`` as ``repo`` at one commit (offline snapshot)."""
    import shutil

    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy(f, snap / f.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_hub_repo_id_goes_through_the_cache_and_offline_miss_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants
    from transformer_lens import HookedTransformer

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as err:
        bilinear_lens.load_pretrained("tdooms/ts-medium")
    msg = str(err.value)
    assert "\n" not in msg and "local folder" in msg and "huggingface-cli download tdooms/ts-medium" in msg
    with pytest.raises(CheckpointError, match="could not be fetched"):
        HookedTransformer.from_pretrained("tdooms/ts-medium")

    folder = write_authors_model(tmp_path / "src", scale_attn=False, **SMALL)
    _fake_hub_cache(cache, "tdooms/ts-medium", folder)
    ids = _ids(SMALL["vocab"])
    for load in (bilinear_lens.load_pretrained, HookedTransformer.from_pretrained):
        model = load("tdooms/ts-medium")
        assert _gap(model, folder, ids) <= TOL
        assert bilinear_lens.published_info(model).attn_scale == 1.0


def test_decomposition_identity_on_the_loaded_model(tmp_path):
    folder = write_authors_model(tmp_path / "m", **LARGE)
    model = bilinear_lens.load_pretrained(str(folder))
    u = torch.randn(3, LARGE["d_model"], generator=torch.Generator().manual_seed(2))
    layer = 1
    eig = bilinear_lens.eigendecompose(model, layer, u)
    _, cache = model.run_with_cache(_ids(LARGE["vocab"]))
    x = cache[f"blocks.{layer}.mlp.hook_in"]
    out = cache[f"blocks.{layer}.hook_mlp_out"] - model.blocks[layer].mlp.b_out
    acts = torch.einsum("nk,nkd,btd->btnk", eig.values, eig.vectors, x) * torch.einsum("nkd,btd->btnk", eig.vectors, x)
    lhs, rhs = acts.sum(-1), torch.einsum("nd,btd->btn", u, out)
    assert (lhs - rhs).abs().max() <= 1e-4 * (1 + rhs.abs().max())
    # and the hook is the authors' mlp-in (the weightless norm's output)
    ref = {}
    reference_forward(folder, _ids(LARGE["vocab"]), cache=ref)
    assert (x.double() - ref[f"{layer}.mlp_in"]).abs().max() <= 1e-4


def test_wordpiece_tokenizer_round_trips_through_transformer_lens(tmp_path):
    tok = wordpiece_tokenizer(tmp_path / "m")
    assert tok.token_to_id("[UNK]") == 0 and tok.token_to_id("[BOS]") == 1 and tok.token_to_id("[EOS]") == 2
    folder = write_authors_model(tmp_path / "m", **{**SMALL, "vocab": tok.get_vocab_size()})
    model = bilinear_lens.load_pretrained(str(folder))
    text = "Once upon a time, Lily loved balloons."
    raw = tok.encode(text).ids
    assert raw[0] == 1 and raw.count(1) == 1
    assert model.to_tokens(text)[0].tolist() == raw  # BOS once, not doubled
    assert model.to_tokens(text, prepend_bos=False)[0].tolist() == raw[1:]
    assert model.tokenizer.bos_token == "[BOS]" and model.tokenizer.pad_token == "[EOS]"
    pieces = model.to_str_tokens("timed", prepend_bos=False)
    assert len(pieces) > 1 and pieces[1].startswith("##")  # a word made of ## pieces ...
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == "once upon a time, lily loved balloons."
    assert model.to_string(model.to_tokens("timed", prepend_bos=False)[0]) == "timed"  # ... joined back
    assert _gap(model, folder, torch.tensor([raw])) <= TOL


def test_no_tokenizer_available_warns_how_to_give_one(tmp_path):
    folder = write_authors_model(tmp_path / "m", **SMALL)
    warnings.resetwarnings()
    with pytest.warns(UserWarning, match="loaded without a tokenizer.*tokenizer="):
        model = bilinear_lens.load_pretrained(str(folder))
    assert model.tokenizer is None


def test_import_model_loads_in_plain_transformers_with_the_same_log_probs(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bilinear_lens.cli import main

    tok = wordpiece_tokenizer(tmp_path / "m")
    folder = write_authors_model(tmp_path / "m", scale_attn=ABSENT, inv_freq=True,
                                 **{**LARGE, "vocab": tok.get_vocab_size()})
    out = tmp_path / "llama"
    assert main(["import-model", str(folder), "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_act"] == "linear" and cfg["rms_norm_eps"] == 1e-8 and cfg["model_type"] == "llama"
    assert cfg["tie_word_embeddings"] is False and "auto_map" not in cfg
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = _ids(tok.get_vocab_size())
    with torch.no_grad():
        lp = hf(ids).logits.log_softmax(-1).double()
    assert (lp - reference_forward(folder, ids)).abs().max() <= TOL
    # ... and in a fresh process that never imports bilinear_lens (plain transformers, no plugin)
    import subprocess

    torch.save(ids, tmp_path / "ids.pt")
    code = ("import sys, torch; from transformers import AutoModelForCausalLM; "
            f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}, dtype=torch.float32).eval(); "
            f"ids = torch.load({str(tmp_path / 'ids.pt')!r}); "
            "lp = m(ids).logits.log_softmax(-1).detach(); assert 'bilinear_lens' not in sys.modules; "
            f"torch.save(lp, {str(tmp_path / 'lp.pt')!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (torch.load(tmp_path / "lp.pt").double() - reference_forward(folder, ids)).abs().max() <= TOL
    hf_tok = AutoTokenizer.from_pretrained(str(out))
    assert (hf_tok.bos_token, hf_tok.eos_token, hf_tok.unk_token, hf_tok.pad_token) == ("[BOS]", "[EOS]", "[UNK]", "[EOS]")
    assert hf_tok("Once upon")["input_ids"][0] == 1
    # the Llama folder also loads back through TransformerLens
    assert _gap(bilinear_lens.load_pretrained(str(out)), folder, ids) <= TOL
    # run-folder safety: a second run refuses, --resume verifies, a refused source writes nothing
    before = (out / "model.safetensors").read_bytes()
    assert main(["import-model", str(folder), "--out", str(out)]) == 1
    assert main(["import-model", str(folder), "--out", str(out), "--resume"]) == 0
    assert (out / "model.safetensors").read_bytes() == before
    bad = write_authors_model(tmp_path / "bad", extra={"attention2": True}, **SMALL)
    assert main(["import-model", str(bad), "--out", str(tmp_path / "never")]) == 1
    assert not (tmp_path / "never").exists()


def test_import_model_records_the_scale_override(tmp_path):
    from bilinear_lens.published_cli import import_model

    folder = write_authors_model(tmp_path / "m", scale_attn=True, **SMALL)
    summary = import_model(str(folder), str(tmp_path / "out"), scale_attn=False)
    assert summary["overridden"] and summary["attn_scale"] == 1.0
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["bilinear_lens_source"]["attn_scale"] == 1.0


PUBLISHED = {  # repo: (layers, heads, d_model, d_hidden, vocab, params in the note's table)
    "tdooms/ts-medium": (6, 8, 512, 2048, 4096, 29_360_128),
    "tdooms/ts-large": (8, 12, 768, 3072, 4096, 81_788_928),
    "tdooms/fw-small": (12, 12, 768, 3072, 32000, 162_398_208),
    "tdooms/fw-medium": (16, 16, 1024, 4096, 32000, 333_971_456),
    "tdooms/fw-tiny-old": (8, 12, 768, 3072, 32000, 124_649_472),
}


@pytest.mark.parametrize("repo", sorted(PUBLISHED))
def test_parameter_counts_of_the_published_shapes(repo):
    """Counted on the meta device (no memory): the Llama model without its norm weights of ones."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bilinear_lens.checkpoints.authors import AuthorsConfig, expected_shapes, hf_llama_config

    L, H, d, h, vocab, params = PUBLISHED[repo]
    acfg = AuthorsConfig(n_layer=L, n_head=H, d_model=d, d_hidden=h, n_ctx=256, vocab=vocab, gate=None,
                         scale_attn=True, scale_attn_key=None, tokenizer=None, has_inv_freq=False)
    assert acfg.d_head == 64
    assert sum(math.prod(s) for s in expected_shapes(acfg).values()) == params
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**hf_llama_config(acfg, 1.0)))
    n = sum(p.numel() for name, p in model.named_parameters() if "norm" not in name)
    assert n == params


def test_mistral_style_sentencepiece_tokenizer_from_the_folder(tmp_path, shared):
    """The fw models' Mixtral tokenizer (stand-in: the TinyLlama SentencePiece tokenizer, same size and ids)."""
    import shutil

    src = shared("models", "tinyllama-tokenizer")
    folder = write_authors_model(tmp_path / "m", extra={"tokenizer": "mistral"}, **{**SMALL, "vocab": 32000})
    for f in src.iterdir():
        shutil.copy(f, folder / f.name)
    model = bilinear_lens.load_pretrained(str(folder))
    toks = model.to_tokens("Once upon a time")[0].tolist()
    assert toks[0] == 1 and toks.count(1) == 1 and model.tokenizer.bos_token == "<s>"
    assert model.to_string(model.to_tokens("Once upon a time", prepend_bos=False)[0]) == "Once upon a time"
    assert _gap(model, folder, torch.tensor([toks])) <= TOL
