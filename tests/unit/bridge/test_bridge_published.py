"""The authors' published format (tdooms/*) on the TransformerBridge: ``boot_transformers(folder)``.

Runs on TransformerLens 3.9 and 4.x (HookedTransformer parity skips on 4.x, SAELens skips without it).
Every folder is written in the authors' exact format with random weights (tests/authors_format.py) and
checked against the independent plain-torch implementation of their forward pass written there.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

import bilinear_lens as bl
from bilinear_lens.bridge import BilinearMLPBridge
from bilinear_lens.checkpoints import CheckpointError
from bilinear_lens.checkpoints.authors import tensor_shapes
from tests.authors_format import ABSENT, reference_forward, wordpiece_tokenizer, write_authors_model
from tests.conftest import make_tokenizer, needs_hooked

SMALL = dict(n_layer=2, n_head=2, d_model=16, d_hidden=24)
LARGE = dict(n_layer=3, n_head=4, d_model=32, d_hidden=40)
L = 1
MLP_HOOKS = ("hook_in", "hook_pre", "hook_pre_linear", "hook_post", "hook_out")
TOL = 1e-4


@pytest.fixture(autouse=True)
def _tokenizer_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BILINEAR_LENS_CACHE", str(tmp_path / "cache"))


def authors_folder(path: Path, size=SMALL, **kw) -> Path:
    """An authors'-format folder with its ts-4096-style WordPiece tokenizer (as the Hub repo would give it)."""
    tok = wordpiece_tokenizer(path)
    return write_authors_model(path, vocab=tok.get_vocab_size(), **size, **kw)


def boot(src, compat: bool, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(src), device="cpu", **kw)
        if compat:
            bridge.enable_compatibility_mode()
    return bridge.eval()


def ids_for(folder: Path, seed: int = 1) -> torch.Tensor:
    vocab = tensor_shapes(folder)["transformer.wte.weight"][0]
    return torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(seed))


def gap(model, folder: Path, ids: torch.Tensor, **ref_kw) -> float:
    with torch.no_grad():
        lp = model(ids).log_softmax(-1).double()
    return float((lp - reference_forward(folder, ids, **ref_kw)).abs().max())


def directions(n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(2))


def rel_close(actual, expected, rtol=1e-5):
    scale = expected.abs().max().clamp_min(1e-30)
    assert ((actual - expected).abs().max() / scale).item() <= rtol


@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("scale_attn,size,inv_freq", [(True, SMALL, True), (False, LARGE, False),
                                                       (ABSENT, LARGE, True)])
def test_boot_transformers_matches_the_reference(tmp_path, compat, scale_attn, size, inv_freq):
    folder = authors_folder(tmp_path / "m", size, scale_attn=scale_attn, inv_freq=inv_freq)
    bridge = boot(folder, compat)
    assert all(isinstance(block.mlp, BilinearMLPBridge) for block in bridge.blocks)
    ids = ids_for(folder)
    assert gap(bridge, folder, ids) <= TOL
    info = bl.published_info(bridge)
    expected_s = 1.0 if scale_attn is False else (2 * size["n_layer"]) ** -0.5
    assert info is bridge.published and info.attn_scale == pytest.approx(expected_s) and not info.overridden
    assert info.scale_attn_key == (None if scale_attn is ABSENT else scale_attn)
    # every bilinear hook fires, and hook_in is the authors' mlp-in (the weightless norm's output)
    _, cache = bridge.run_with_cache(ids)
    for name in MLP_HOOKS:
        assert f"blocks.{L}.mlp.{name}" in cache.cache_dict, name
    ref = {}
    reference_forward(folder, ids, cache=ref)
    assert (cache[f"blocks.{L}.mlp.hook_in"].double() - ref[f"{L}.mlp_in"]).abs().max() <= TOL
    # the scale matters: the other choice is far from the reference
    assert gap(boot(folder, compat, scale_attn=scale_attn is False), folder, ids) > 1e-2


def test_scale_attn_override_is_exact_and_recorded(tmp_path):
    folder = authors_folder(tmp_path / "m", scale_attn=False)
    bridge = boot(folder, compat=True, scale_attn=True)
    assert gap(bridge, folder, ids_for(folder), scale_attn=True) <= TOL
    info = bl.published_info(bridge)
    assert info.overridden and info.scale_attn and info.attn_scale == pytest.approx(0.5)
    from tests.conftest import make_llama_dir

    make_llama_dir(tmp_path / "llama")
    with pytest.raises(CheckpointError, match="scale_attn= applies to the authors' published format only"):
        boot(tmp_path / "llama", compat=False, scale_attn=True)


@needs_hooked
@pytest.mark.parametrize("compat", [False, True])
def test_logits_hooks_and_decompositions_match_hooked_transformer(tmp_path, compat):
    folder = authors_folder(tmp_path / "m", LARGE)
    bridge = boot(folder, compat)
    hooked = bl.load_pretrained(str(folder), processing=compat)
    ids = ids_for(folder)
    with torch.no_grad():
        diff = (bridge(ids).log_softmax(-1) - hooked(ids).log_softmax(-1)).abs().max()
    assert diff <= TOL
    _, c_bridge = bridge.run_with_cache(ids)
    _, c_hooked = hooked.run_with_cache(ids)
    for name in MLP_HOOKS[:-1]:
        rel_close(c_bridge[f"blocks.{L}.mlp.{name}"], c_hooked[f"blocks.{L}.mlp.{name}"], rtol=1e-4)
    u = directions(3, LARGE["d_model"])
    for layer in range(LARGE["n_layer"]):
        rel_close(bl.interaction_matrices(bridge, layer, u), bl.interaction_matrices(hooked, layer, u))


@pytest.mark.parametrize("compat", [False, True])
def test_eigen_activations_sum_to_mlp_output(tmp_path, compat):
    """sum_i lambda_i (v_i . x)^2 == u . (MLP(x) - b_out), 1e-5 relative in float32; hook formulas exact."""
    folder = authors_folder(tmp_path / "m", LARGE)
    bridge = boot(folder, compat)
    mlp, u = bridge.blocks[L].mlp, directions(3, LARGE["d_model"])
    eig = bl.eigendecompose(bridge, L, u)
    assert eig.k == LARGE["d_model"] and not eig.homogeneous and not mlp.has_bias
    with bl.attach_eigenvectors(bridge, L, eig):
        _, cache = bridge.run_with_cache(ids_for(folder))
    c = {name: cache[f"blocks.{L}.mlp.{name}"] for name in MLP_HOOKS + ("hook_eig",)}
    target = (c["hook_out"] - mlp.b_out) @ u.T
    rel_close(c["hook_eig"].sum(-1), target)
    rel_close(eig.activations(c["hook_in"]).sum(-1), target)
    torch.testing.assert_close(c["hook_pre"], c["hook_in"] @ mlp.W_gate)
    torch.testing.assert_close(c["hook_pre_linear"], c["hook_in"] @ mlp.W_in)
    torch.testing.assert_close(c["hook_post"], c["hook_pre"] * c["hook_pre_linear"], rtol=0, atol=0)
    assert mlp.eigen is None


@pytest.mark.parametrize("compat", [False, True])
def test_edit_truncate_hosvd_and_eigen_tree(tmp_path, compat):
    folder = authors_folder(tmp_path / "m", LARGE)
    bridge = boot(folder, compat)
    ids, mlp = ids_for(folder), bridge.blocks[L].mlp
    u = torch.linalg.qr(directions(3, LARGE["d_model"]).T)[0].T  # orthonormal rows
    eig = bl.eigendecompose(bridge, L, u)
    name, out = f"blocks.{L}.mlp.hook_eig", f"blocks.{L}.mlp.hook_out"

    def ablate(acts, hook):
        acts = acts.clone()
        acts[..., 1, 0] = 0.0
        return acts

    with bl.attach_eigenvectors(bridge, L, eig):
        _, base = bridge.run_with_cache(ids)
        saved = {}
        bridge.run_with_hooks(ids, fwd_hooks=[(name, ablate), (out, lambda t, hook: saved.setdefault("out", t))])
    change = (saved["out"] - base[out]) @ u.T
    expected = torch.zeros_like(change)
    expected[..., 1] = -base[name][..., 1, 0]
    torch.testing.assert_close(change, expected, rtol=0, atol=1e-5 * base[name].abs().max().item())
    with bl.truncated_mlp(bridge, L, eig):  # the full spectrum changes nothing
        _, full = bridge.run_with_cache(ids)
    rel_close(full[out], base[out])
    with bl.truncated_mlp(bridge, L, eig, k=2):
        _, top2 = bridge.run_with_cache(ids)
    x = base[f"blocks.{L}.mlp.hook_in"]
    rel_close((top2[out] - mlp.b_out) @ u.T, eig.truncate(2).activations(x).sum(-1))
    rel_close(bl.hosvd(bridge, L).reconstruct(x.double()), (base[out] - mlp.b_out).double())
    with pytest.raises(TypeError, match="For a transformer, decompose each layer with eigendecompose"):
        bl.eigen_tree(bridge, u[0], depth=1, k=2)


@pytest.mark.parametrize("gate", ["relu", "silu", "gelu"])
def test_glu_gates_boot_as_gated_mlp_bridges(tmp_path, gate):
    folder = authors_folder(tmp_path / "m", gate=gate)
    for compat in (False, True):
        bridge = boot(folder, compat)
        assert type(bridge.blocks[0].mlp).__name__ == "GatedMLPBridge"
        assert gap(bridge, folder, ids_for(folder)) <= TOL, compat
    with pytest.raises(TypeError, match="not a bilinear MLP"):
        bl.eigendecompose(bridge, 0, directions(1, SMALL["d_model"]))


def test_tokenizer_is_the_authors_bos_once_and_words_joined(tmp_path):
    from tokenizers import Tokenizer

    folder = authors_folder(tmp_path / "m")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))  # as written (training it again may tie differently)
    bridge = boot(folder, compat=False)
    text = "Once upon a time, Lily loved balloons."
    raw = tok.encode(text).ids
    assert bridge.to_tokens(text)[0].tolist() == raw and raw.count(1) == 1
    assert bridge.tokenizer.bos_token == "[BOS]" and bridge.tokenizer.pad_token == "[EOS]"
    assert bridge.to_string(bridge.to_tokens("timed", prepend_bos=False)[0]) == "timed"
    # a tokenizer given explicitly is used as it is
    given = make_tokenizer(bridge.cfg.d_vocab)
    assert boot(folder, compat=False, tokenizer=given).tokenizer.unk_token == "<unk>"


def test_refusals_are_one_line_and_name_the_fix(tmp_path):
    bad = authors_folder(tmp_path / "bad", extra={"attention2": True})
    with pytest.raises(CheckpointError, match="config key attention2=true") as err:
        boot(bad, compat=False)
    assert "\n" not in str(err.value)
    bare = write_authors_model(tmp_path / "bare", vocab=40, **SMALL)  # no tokenizer anywhere (offline)
    with pytest.raises(CheckpointError, match=r"needs a tokenizer.*pass tokenizer=AutoTokenizer") as err:
        boot(bare, compat=False)
    assert "\n" not in str(err.value)
    assert gap(boot(bare, compat=False, tokenizer=make_tokenizer(40)), bare, ids_for(bare)) <= TOL
    with pytest.raises(CheckpointError, match="revision= does not apply"):
        boot(bare, compat=False, tokenizer=make_tokenizer(40), revision="main")


def test_hub_repo_id_resolves_through_the_cache_like_from_pretrained(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants
    from tests.unit.checkpoints.test_published_models import _fake_hub_cache

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(Exception) as err:  # not cached: TransformerLens' own error, nothing of ours
        boot("tdooms/ts-medium", compat=False)
    assert not isinstance(err.value, CheckpointError)
    folder = authors_folder(tmp_path / "src", scale_attn=False)
    _fake_hub_cache(cache, "tdooms/ts-medium", folder)
    bridge = boot("tdooms/ts-medium", compat=True)
    assert isinstance(bridge.blocks[0].mlp, BilinearMLPBridge)
    assert gap(bridge, folder, ids_for(folder)) <= TOL and bl.published_info(bridge).attn_scale == 1.0


def test_sae_transformer_bridge_boots_the_authors_format(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    SAETransformerBridge = getattr(sae_lens, "SAETransformerBridge", None)
    if SAETransformerBridge is None:
        pytest.skip("this SAELens has no SAETransformerBridge")
    folder = authors_folder(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SAETransformerBridge.boot_transformers(str(folder), device="cpu", scale_attn=True)
    model.enable_compatibility_mode()
    assert isinstance(model, SAETransformerBridge) and isinstance(model.blocks[L].mlp, BilinearMLPBridge)
    assert gap(model, folder, ids_for(folder)) <= TOL and bl.published_info(model).overridden
