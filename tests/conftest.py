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
    from transformer_lens import HookedTransformerConfig

    kw = dict(d_model=32, d_mlp=64, n_layers=2, n_heads=4, d_head=8, n_ctx=32, d_vocab=97,
              act_fn="bilinear", gated_mlp=True, normalization_type="RMS",
              positional_embedding_type="rotary", rotary_dim=8, final_rms=True, seed=0)
    kw.update(overrides)
    return HookedTransformerConfig(**kw)


@pytest.fixture
def tiny_bilinear():
    """A random 2-layer bilinear HookedTransformer (d_model 32, d_mlp 64, vocab 97)."""
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    return HookedTransformer(tiny_cfg()).eval()
