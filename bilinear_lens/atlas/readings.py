"""What an eigenvector reads and what its direction writes, from the weights alone.

* **Token decodings** (input side, the paper's "virtual token basis"): token ``t``'s embedding on the
  direct path, through layer ``L``'s MLP norm, ``x_t = ln2(W_E[t])`` ``[d]`` (``[x, 1]`` when
  homogeneous), and its projection ``v_i . x_t``; the activation it would cause is
  ``lambda_i (v_i . x_t)^2``. The top tokens by ``|v_i . x_t|`` are kept with their signed
  projection (either sign activates: ``(v . x)^2``). For ``L > 0`` this ignores attention and the
  earlier MLPs (the direct path only). With ``ov=True`` also each layer-0 head's OV path
  ``x_t = ln2(ln1(W_E[t]) W_V^h W_O^h)``.
* **Output side**: the tokens whose centred logit the direction raises most, ``u . (W_U - mean)``.
* **Input-SAE alignment** (``sae_in``): the decoder rows ``W_dec[f]`` with the largest
  ``|cos(v_i, W_dec[f])|`` (first ``d_model`` entries of ``v_i``).
* **Spectrum summary** per direction: ``low_rank = |lambda_1| + |lambda_2|`` (the paper's
  low-rankness score), ``||Q||_F`` exactly from the weights (no ``Q`` formed:
  ``||Q||_F^2 = 1/2 s^T K s`` with ``K = (G_in * G_gate) + (C * C^T)``, ``G_in = W_in^T W_in``,
  ``G_gate = W_gate^T W_gate``, ``C = W_gate^T W_in`` ``[d_mlp, d_mlp]``, ``*`` elementwise), and
  ``energy_k = sum_{i<=k} lambda_i^2 / ||Q||_F^2`` (the fraction of the squared Frobenius norm).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.interaction import output_scales
from bilinear_lens.decomposition.weights import BilinearWeights

CHUNK = 64  # directions per decoding matmul ([CHUNK * k, d] x [d, d_vocab])


def _norm_input(model: Any, layer: int, x: Tensor) -> Tensor:
    """``x`` ``[n, d_model]`` through block ``layer``'s ``ln2`` (as ``blocks.L.mlp.hook_in`` sees it)."""
    ln2 = model.blocks[layer].ln2
    return ln2(x[None].to(next(model.parameters()).dtype))[0].detach()


def token_inputs(model: Any, layer: int, weights: BilinearWeights, ov: bool = False) -> Dict[str, Tensor]:
    """``{"direct": [d_vocab, d], "ov.0.h": ...}``: the MLP input each token gives on each path."""
    with torch.no_grad():
        W_E = model.W_E.detach()
        paths = {"direct": weights.lift(_norm_input(model, layer, W_E).to(weights.W_in))}
        if ov:
            ln1, attn = model.blocks[0].ln1, model.blocks[0].attn
            e = ln1(W_E[None])[0]
            W_V, W_O = attn.W_V, attn.W_O  # a TransformerBridge keeps grouped (GQA) values: [n_kv, d_model, d_head]
            group = model.cfg.n_heads // W_V.shape[0]
            for h in range(model.cfg.n_heads):
                W_OV = W_V[h // group] @ W_O[h]
                paths[f"ov.0.{h}"] = weights.lift(_norm_input(model, layer, e @ W_OV).to(weights.W_in))
    return paths


def token_decodings(vectors: Float[Tensor, "n k d"], inputs: Float[Tensor, "V d"], top: int) -> tuple:
    """Top-``top`` tokens by ``|v_i . x_t|``: ``ids [n, k, top]`` and signed projections."""
    n, k, d = vectors.shape
    ids, proj = [], []
    top = min(top, inputs.shape[0])
    for chunk in vectors.split(CHUNK):
        p = torch.einsum("nkd,vd->nkv", chunk, inputs.to(chunk))
        i = p.abs().topk(top, dim=-1).indices
        ids.append(i)
        proj.append(p.gather(-1, i))
    return torch.cat(ids), torch.cat(proj)


def output_reading(model: Any, directions: Float[Tensor, "n d_model"], top: int) -> tuple:
    """Tokens whose centred logit ``u . (W_U[:, t] - mean)`` is largest: ``ids [n, top]``, values."""
    from bilinear_lens.atlas.directions import unembedding

    W_U = unembedding(model).to(directions)
    logits = directions @ (W_U - W_U.mean(1, keepdim=True))
    v, i = logits.topk(min(top, logits.shape[-1]), dim=-1)
    return i, v


def sae_alignment(vectors: Float[Tensor, "n k d"], decoder: Float[Tensor, "d_sae d_model"], top: int) -> tuple:
    """Input-SAE features with the largest ``|cos(v_i, W_dec[f])|``: ``ids [n, k, top]``, signed cos."""
    D = decoder.to(vectors)
    D = D / D.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    v = vectors[..., : D.shape[-1]]
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    c = torch.einsum("nkd,fd->nkf", v, D)
    i = c.abs().topk(min(top, D.shape[0]), dim=-1).indices
    return i, c.gather(-1, i)


class FrobeniusNorm:
    """``||Q(u)||_F`` for many directions from the ``[d_mlp, d_mlp]`` matrix ``K`` (module docstring)."""

    def __init__(self, weights: BilinearWeights):
        W_in, W_gate = weights.W_in.double(), weights.W_gate.double()
        C = W_gate.T @ W_in
        self.K = (W_in.T @ W_in) * (W_gate.T @ W_gate) + C * C.T
        self.weights = weights

    def __call__(self, directions: Float[Tensor, "n d_model"]) -> Tensor:
        s = output_scales(self.weights, directions).double()
        return (0.5 * ((s @ self.K) * s).sum(-1)).clamp_min(0).sqrt()


def spectrum_summary(values: Float[Tensor, "n k"], fro: Float[Tensor, "n"]) -> Dict[str, Tensor]:
    """``low_rank`` (``|lambda_1| + |lambda_2|``), ``fro`` and ``energy`` (top-k share of ``||Q||_F^2``)."""
    a = values.double().abs()
    low_rank = a[:, :2].sum(-1)
    energy = (a.square().sum(-1) / fro.double().square().clamp_min(1e-300)).clamp(max=1.0)
    return {"low_rank": low_rank.float(), "fro": fro.float(), "energy": energy.float()}


def read_shard(model: Any, weights: BilinearWeights, directions: Tensor, vectors: Tensor, values: Tensor,
               inputs: Dict[str, Tensor], fro: FrobeniusNorm, top: int = 10,
               decoder: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """All weight-only readings of one shard, as tensors named for the shard file."""
    out: Dict[str, Tensor] = {}
    for name, x in inputs.items():
        ids, proj = token_decodings(vectors, x, top)
        out[f"tokens.{name}.ids"], out[f"tokens.{name}.proj"] = ids.int(), proj.float()
    if hasattr(model, "W_U"):
        ids, logit = output_reading(model, directions, top)
        out["output.ids"], out["output.logit"] = ids.int(), logit.float()
    if decoder is not None:
        ids, cos = sae_alignment(vectors, decoder, top)
        out["sae_in.ids"], out["sae_in.cos"] = ids.int(), cos.float()
    out.update(spectrum_summary(values, fro(directions)))
    return out
