"""Folders in the authors' exact published format, with random weights, and an independent
plain-torch implementation of their forward pass (written from the format note, not from
TransformerLens or transformers), shared by the published-model tests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import save_file

ABSENT = object()


def write_authors_model(path: Path, n_layer: int = 2, n_head: int = 2, d_model: int = 16, d_hidden: int = 24,
                        vocab: int = 40, n_ctx: int = 32, scale_attn: Any = ABSENT, gate: Any = ABSENT,
                        inv_freq: bool = False, seed: int = 0, extra: Optional[Dict[str, Any]] = None,
                        extra_tensors: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` as the authors' ``Transformer.save_pretrained`` does."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: (torch.randn(*s, generator=g) / math.sqrt(s[-1])).float()  # noqa: E731
    path.mkdir(parents=True, exist_ok=True)
    cfg: Dict[str, Any] = {"architectures": ["Transformer"], "n_head": n_head, "n_layer": n_layer, "n_ctx": n_ctx,
                           "d_model": d_model, "d_hidden": d_hidden, "bilinear": True, "bias": False,
                           "attention2": False, "normalization": True, "tokenizer": "ts-4096",
                           "dataset": "tinystories", "noise": None, "transformers_version": "4.44.0",
                           "torch_dtype": "float32"}
    if scale_attn is not ABSENT:
        cfg["scale_attn"] = scale_attn
    if gate is not ABSENT:
        cfg["gate"] = gate
    cfg.update(extra or {})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    d_head = d_model // n_head
    t = {"transformer.wte.weight": torch.randn(vocab, d_model, generator=g), "lm_head.weight": rnd(vocab, d_model)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        t[p + "attn.qkv.weight"] = rnd(3 * d_model, d_model) * 2
        t[p + "attn.o.weight"] = rnd(d_model, d_model)
        t[p + "mlp.w.weight"] = rnd(2 * d_hidden, d_model)
        t[p + "mlp.p.weight"] = rnd(d_model, d_hidden)
        if inv_freq:
            t[p + "attn.rotary.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, d_head, 2).float() / d_head))
    t.update(extra_tensors or {})
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-8)


def _rope(x: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of ``x [B, H, T, dh]``, base 10000, positions 0..T-1."""
    T, dh = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, dh, 2).float() / dh))
    freqs = torch.outer(torch.arange(T).float(), inv)
    emb = torch.cat([freqs, freqs], -1)
    x1, x2 = x.chunk(2, -1)
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


GATE_FNS = {None: lambda z: z, "relu": torch.relu, "silu": torch.nn.functional.silu,
            "gelu": torch.nn.functional.gelu}


def reference_forward(path: Path, ids: torch.Tensor, scale_attn: Optional[bool] = None,
                      cache: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """Log-probs ``[B, T, vocab]`` of the authors' model in ``path`` on ``ids [B, T]`` (float64 inside).

    ``cache`` (a dict) receives per-layer ``resid_pre``, ``resid_mid``, ``mlp_in``, ``mlp_out``,
    ``attn_out`` (before the scale) and ``resid_post``.
    """
    from safetensors.torch import load_file

    cfg = json.loads((path / "config.json").read_text())
    w = {k: v.double() for k, v in load_file(str(path / "model.safetensors")).items()}
    L, H, d = cfg["n_layer"], cfg["n_head"], cfg["d_model"]
    use = cfg.get("scale_attn", True) if scale_attn is None else scale_attn
    s = 1.0 / math.sqrt(2 * L) if use else 1.0
    gate = GATE_FNS[cfg.get("gate")]
    x = w["transformer.wte.weight"][ids]
    B, T = ids.shape
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(L):
        p = f"transformer.h.{i}."
        if cache is not None:
            cache[f"{i}.resid_pre"] = x
        q, k, v = (_rms(x) @ w[p + "attn.qkv.weight"].T).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
        q, k = _rope(q), _rope(k)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)
        z = scores.masked_fill(~mask, -torch.inf).softmax(-1) @ v
        attn = z.transpose(1, 2).reshape(B, T, d) @ w[p + "attn.o.weight"].T
        x = x + s * attn
        h = _rms(x)
        left, right = (h @ w[p + "mlp.w.weight"].T).chunk(2, -1)
        out = (gate(left) * right) @ w[p + "mlp.p.weight"].T
        if cache is not None:
            cache.update({f"{i}.attn_out": attn, f"{i}.resid_mid": x, f"{i}.mlp_in": h, f"{i}.mlp_out": out})
        x = x + out
        if cache is not None:
            cache[f"{i}.resid_post"] = x
    logits = _rms(x) @ w["lm_head.weight"].T
    return logits.log_softmax(-1)


def wordpiece_tokenizer(folder: Path):
    """A ts-4096-style WordPiece tokenizer (the note's normaliser, pre-tokeniser, post-processor) saved as
    ``folder/tokenizer.json`` as published: no decoder, no named special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    text = ["Once upon a time, there was a little girl named Lily. She loved 3 red balloons!"] * 10
    tok.train_from_iterator(text, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]", "[BOS]", "[EOS]"]))
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))  # as published: no decoder, no named special tokens
    return tok
