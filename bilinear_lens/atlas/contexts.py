"""Top-activating contexts per eigenvector, streamed over a text.

The activation of eigenvector ``i`` of direction ``j`` at a token is ``a = lambda_ji (v_ji . x)^2``
with ``x`` the MLP input ``blocks.L.mlp.hook_in`` (``[x, 1]`` when homogeneous). The text is run in
batches of rows ``[b, ctx]``; per batch only ``[b, ctx, E]`` activations exist (``E = n k``
eigenvectors, chunked), and a running top-``N`` per eigenvector keeps the rows with the largest
peak ``|a|`` (``max`` over positions; ``lambda < 0`` eigenvectors rank by ``-a``):

    best [N, E], row [N, E], pos [N, E]   <- topk over cat(best, batch peaks)

A second pass over only the chosen rows records each context's window of per-token activations
(``before`` tokens before the peak, ``after`` after), for highlighting. Memory is
``O(N E + b ctx E_chunk)``, independent of the length of the text.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from jaxtyping import Float, Int
from torch import Tensor

E_CHUNK = 8192  # eigenvectors per activation matmul


def mlp_inputs(model: Any, layer: int, tokens: Int[Tensor, "b ctx"], lift: Any) -> Tensor:
    """``blocks.{layer}.mlp.hook_in`` for a batch of rows (the forward stops after that block)."""
    name = f"blocks.{layer}.mlp.hook_in"
    device = next(model.parameters()).device
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(device), names_filter=name, stop_at_layer=layer + 1)
    return lift(cache[name])


def _peaks(x: Tensor, V: Tensor, lam: Tensor) -> tuple:
    """Peak ``|a| = |lambda| (v . x)^2`` per row and eigenvector: values and positions ``[b, E]``."""
    out_v, out_p = [], []
    for s in range(0, V.shape[0], E_CHUNK):
        a = (x @ V[s : s + E_CHUNK].T).square() * lam[s : s + E_CHUNK].abs()  # [b, ctx, e]
        v, p = a.max(dim=1)
        out_v.append(v)
        out_p.append(p)
    return torch.cat(out_v, -1), torch.cat(out_p, -1)


def top_contexts(model: Any, layer: int, tokens: Int[Tensor, "rows ctx"], values: Float[Tensor, "n k"],
                 vectors: Float[Tensor, "n k d"], lift: Any, top: int = 5, batch: int = 16,
                 before: int = 12, after: int = 4) -> Dict[str, Tensor]:
    """Running top-``top`` contexts of every eigenvector (module docstring).

    Returns ``contexts.row/.pos/.act`` ``[n, k, top]`` (row of ``tokens``, peak position, peak
    activation ``lambda (v . x)^2``; row -1 when the text has fewer rows) and
    ``contexts.tokens/.acts`` ``[n, k, top, before + 1 + after]`` (token ids, -1 padding, and
    their activations).
    """
    n, k, d = vectors.shape
    E = n * k
    V = vectors.reshape(E, d).float()
    lam = values.reshape(E).float()
    N = min(top, tokens.shape[0])
    best = torch.full((N, E), -float("inf"))
    row = torch.full((N, E), -1, dtype=torch.long)
    pos = torch.zeros((N, E), dtype=torch.long)
    for r0 in range(0, tokens.shape[0], batch):
        x = mlp_inputs(model, layer, tokens[r0 : r0 + batch], lift).float().cpu()
        v, p = _peaks(x, V, lam)
        cand_v = torch.cat([best, v])
        cand_r = torch.cat([row, torch.arange(r0, r0 + x.shape[0]).unsqueeze(-1).expand(-1, E)])
        cand_p = torch.cat([pos, p])
        sel = cand_v.topk(N, dim=0).indices  # ties: lower index (earlier row) first
        best, row, pos = cand_v.gather(0, sel), cand_r.gather(0, sel), cand_p.gather(0, sel)
    W = before + 1 + after
    win_tok = torch.full((N, E, W), -1, dtype=torch.long)
    win_act = torch.zeros((N, E, W))
    used = torch.unique(row[row >= 0])
    for c0 in range(0, len(used), batch):
        rows = used[c0 : c0 + batch]
        x = mlp_inputs(model, layer, tokens[rows], lift).float().cpu()  # [b, ctx, d]
        for bi, r in enumerate(rows.tolist()):
            slot, e = (row == r).nonzero(as_tuple=True)
            acts = lam[e] * (x[bi] @ V[e].T).square()  # [ctx, m]
            ctx = tokens.shape[1]
            for w in range(W):
                t = pos[slot, e] - before + w
                ok = (t >= 0) & (t < ctx)
                tc = t.clamp(0, ctx - 1)
                win_tok[slot[ok], e[ok], w] = tokens[r, tc[ok]]
                win_act[slot[ok], e[ok], w] = acts[tc[ok], ok.nonzero().flatten()]
    act = torch.where(row >= 0, best * torch.where(lam < 0, -1.0, 1.0), torch.zeros_like(best))

    def shape(t: Tensor) -> Tensor:  # [N, E, ...] -> [n, k, N, ...]
        return t.movedim(0, 1).reshape(n, k, N, *t.shape[2:])

    return {"contexts.row": shape(row).int(), "contexts.pos": shape(pos).int(), "contexts.act": shape(act).float(),
            "contexts.tokens": shape(win_tok).int(), "contexts.acts": shape(win_act).float()}
