"""Shared fixtures: tiny bilinear models and the offline data in ../shared."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import bilinear_lens  # noqa: E402,F401  (registers the plugin)
from bilinear_lens.registration import has_hooked_transformer  # noqa: E402

HOOKED = has_hooked_transformer()
"""TransformerLens 3.x: ``HookedTransformer`` exists (4.0 removed it; the bridge path remains)."""
NO_HOOKED = "TransformerLens 4.x removed HookedTransformer (the bridge path is tested in tests/unit/bridge/test_bridge.py)"
needs_hooked = pytest.mark.skipif(not HOOKED, reason=NO_HOOKED)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BILINEAR_LENS_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared; the test is skipped (not failed) on machines without it."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (needs ../shared, see ../shared/DATA.md)")
    return path


@pytest.fixture
def shared():
    return shared_path


def tiny_cfg(**overrides):
    if not HOOKED:
        pytest.skip(NO_HOOKED)
    from transformer_lens import HookedTransformerConfig

    kw = dict(d_model=32, d_mlp=64, n_layers=2, n_heads=4, d_head=8, n_ctx=32, d_vocab=97,
              act_fn="bilinear", gated_mlp=True, normalization_type="RMS",
              positional_embedding_type="rotary", rotary_dim=8, final_rms=True, seed=0)
    kw.update(overrides)
    return HookedTransformerConfig(**kw)


@pytest.fixture
def tiny_bilinear():
    """A random 2-layer bilinear HookedTransformer (d_model 32, d_mlp 64, vocab 97)."""
    if not HOOKED:
        pytest.skip(NO_HOOKED)
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    return HookedTransformer(tiny_cfg()).eval()


@pytest.fixture
def tiny_transformer():
    """Some bilinear transformer of ``tiny_bilinear``'s shape (d_model 32, d_mlp 64, 2 layers, vocab 97) on every
    TransformerLens: that HookedTransformer on 3.x, a raw-mode ``TransformerBridge`` of a random bilinear Llama
    folder on 4.x (for tests of the decompositions, which accept both)."""
    if HOOKED:
        from transformer_lens import HookedTransformer

        torch.manual_seed(0)
        return HookedTransformer(tiny_cfg()).eval()
    return bridge64().float()


def make_tokenizer(vocab_size: int, path=None):
    """A tiny offline word-level HF tokenizer: ``<unk>=0, <s>=1, </s>=2``, words ``w3 .. w{V-1}``.

    Saved to ``path`` (a temporary folder by default) and loaded back, as TransformerLens reloads
    tokenizers by their ``name_or_path``.
    """
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")
    path = str(path or tempfile.mkdtemp(prefix="tok-"))
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def make_llama_dir(path, hidden_act="linear", mlp_bias=False, n_kv=2, vocab=101, seed=0,
                   tokenizer=True, **overrides):
    """Save a random HF ``LlamaForCausalLM`` (non-trivial RMSNorm weights, random biases) to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    kw = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=n_kv, hidden_act=hidden_act,
              mlp_bias=mlp_bias, max_position_embeddings=64, tie_word_embeddings=False)
    kw.update(overrides)
    hf = LlamaForCausalLM(LlamaConfig(**kw)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif "bias" in name:
                p.normal_(0, 0.1)
    hf.save_pretrained(str(path))
    if tokenizer:
        make_tokenizer(vocab, path)
    return hf


@pytest.fixture
def llama_dir(tmp_path):
    """Factory: ``llama_dir(name, **kw) -> (path, hf_model)`` for a random Llama folder."""

    def make(name="bilinear-llama", **kw):
        path = tmp_path / name
        return path, make_llama_dir(path, **kw)

    return make


_BRIDGE_FOLDERS: dict = {}


def bridge64(bias: bool = False):
    """TransformerLens 4.x stand-in for ``HookedTransformer(tiny_cfg(dtype=float64))``: a raw-mode
    ``TransformerBridge`` of a random bilinear Llama folder of the same shape (d_model 32, d_mlp 64,
    2 layers, 4 heads, vocab 97), in float64, with random MLP biases when ``bias``."""
    import tempfile

    from transformer_lens.model_bridge import TransformerBridge

    if bias not in _BRIDGE_FOLDERS:
        path = Path(tempfile.mkdtemp(prefix="bridge64-")) / "m"
        make_llama_dir(path, mlp_bias=bias, n_kv=4, vocab=97)
        _BRIDGE_FOLDERS[bias] = path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_transformers(str(_BRIDGE_FOLDERS[bias]), device="cpu",
                                                   dtype=torch.float64).eval()
