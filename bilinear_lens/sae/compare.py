"""What the weights say next to what the SAEs find: the metrics of ``bilinear-lens compare``.

Notation (layer ``L``; ``x`` = ``blocks.L.mlp.hook_in`` ``[d_model]``; ``y = MLP(x)`` =
``blocks.L.hook_mlp_out``): an output SAE with encoder rows ``e_a = W_enc_out[:, a]`` and an input
SAE with decoder rows ``D_in = W_dec_in`` ``[d_sae_in, d_model]``.

* feature interaction matrix (P2 §3.1): ``Q_lat(a) = D_in Q(e_a) D_in^T`` ``[d_sae_in, d_sae_in]``,
  so that ``e_a . (y - b_out) ~= z_in^T Q_lat(a) z_in`` for ``x ~= z_in D_in``; self-interactions are
  its diagonal, cross-interactions ``2 Q_lat[b, c]`` (``b < c``);
* low-rank approximation (P2 §5.2): ``y_hat_k = sum_{i<=k} lambda_i (v_i . x)^2`` with the
  eigenpairs of ``Q(e_a)`` by ``|lambda|``, Pearson-correlated with the output feature's activation
  over the tokens where it is active;
* eigenvector / SAE matching: ``|cos(v_i, D_in[b])|``, max per eigenvector and a one-to-one
  (Hungarian) matching.

``Q`` and the eigenpairs come from :func:`bilinear_lens.interaction_matrices` and
:func:`bilinear_lens.eigendecompose`; nothing here recomputes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from bilinear_lens.hooks.processing import check_processing
from bilinear_lens.sae.config import DEFAULT_KS, sae_hook_name


def check_sae(model: Any, layer: int, sae: Any, side: str) -> None:
    """Reject an SAE that was not trained on this layer's MLP input (``side="in"``) or output.

    Raises ``ValueError`` naming the problem when ``d_in`` differs from the model's ``d_model``,
    when the SAE's hook is missing, not in the model, or not ``blocks.L.mlp.hook_in`` /
    ``blocks.L.hook_mlp_out``, or (output side) when the SAE has no encoder matrix.
    """
    expected = sae_hook_name(layer, side)
    what = "input SAE (--sae-in)" if side == "in" else "output SAE (--sae-out)"
    fix = f"train one with: bilinear-lens train-sae --layer {layer} --hook {side} ..."
    d_in, d_model = int(sae.cfg.d_in), int(model.cfg.d_model)
    if d_in != d_model:
        raise ValueError(f"the {what} has d_in={d_in}, but layer {layer}'s MLP {side}put has d_model="
                         f"{d_model}: it was trained on another model or hook; {fix}.")
    hook = getattr(sae.cfg.metadata, "hook_name", None)
    if hook is None:
        raise ValueError(f"the {what} has no metadata.hook_name, so where it reads activations is "
                         f"unknown; expected {expected!r}; {fix}.")
    if hook not in model.hook_dict:
        raise ValueError(f"the {what} reads hook {hook!r}, which this model does not have; expected "
                         f"{expected!r}; {fix}.")
    if hook != expected:
        raise ValueError(f"the {what} reads hook {hook!r}, but the comparison needs {expected!r} "
                         f"(the bilinear layer's {'input, where eigenvectors live' if side == 'in' else 'output'}); {fix}.")
    check_processing(model, sae, what)  # trained with another fold_ln: differently scaled inputs
    if side == "out" and not hasattr(sae, "W_enc"):
        raise ValueError(f"the {what} ({sae.cfg.architecture()}) has no encoder matrix W_enc, which "
                         "defines the output directions; use another architecture (e.g. topk).")


@dataclass
class Activations:
    """Per-token activations of layer ``L`` on the rows that were run (``M`` = kept tokens).

    ``x``: MLP inputs ``[M, d_model]``; ``z_in`` / ``z_out``: SAE feature activations
    ``[M, d_sae]``; ``row``, ``pos``: where each kept token is in ``tokens`` ``[n_rows, context]``.
    Position 0 and BOS tokens are dropped.
    """

    x: Float[Tensor, "M d_model"]
    z_in: Float[Tensor, "M d_sae_in"]
    z_out: Float[Tensor, "M d_sae_out"]
    row: Int[Tensor, "M"]
    pos: Int[Tensor, "M"]
    tokens: Int[Tensor, "n_rows context"]


def keep_mask(tokens: Int[Tensor, "n_rows context"], bos: Optional[int]) -> Bool[Tensor, "n_rows context"]:
    """Tokens the analyses use: not position 0 (the attention sink) and not BOS."""
    keep = torch.ones_like(tokens, dtype=torch.bool)
    keep[:, 0] = False
    if bos is not None:
        keep &= tokens != bos
    return keep


@torch.no_grad()
def collect_activations(model: Any, layer: int, tokens: Int[Tensor, "n_rows context"], sae_in: Any,
                        sae_out: Any, batch_size: int = 16, bos: Optional[int] = None) -> Activations:
    """Run the model to layer ``L`` and encode ``hook_in`` / ``hook_mlp_out`` with the SAEs."""
    names = [sae_hook_name(layer, "in"), sae_hook_name(layer, "out")]
    keep = keep_mask(tokens, bos)
    xs, zi, zo = [], [], []
    for start in tqdm(range(0, len(tokens), batch_size), desc="activations", leave=False):
        batch = tokens[start:start + batch_size]
        _, cache = model.run_with_cache(batch, names_filter=names, stop_at_layer=layer + 1)
        mask = keep[start:start + batch_size]
        x, y = cache[names[0]][mask], cache[names[1]][mask]
        xs.append(x)
        zi.append(sae_in.encode(x.to(sae_in.dtype)).float())
        zo.append(sae_out.encode(y.to(sae_out.dtype)).float())
    row, pos = keep.nonzero(as_tuple=True)
    return Activations(torch.cat(xs), torch.cat(zi), torch.cat(zo), row, pos, tokens)


@dataclass
class LowRank:
    """Low-rank approximation results for ``n`` qualifying output features.

    ``features [n]``: feature indices; ``corr [n, len(ks)]``: Pearson correlation of ``y_hat_k``
    with the activation over active tokens; ``n_active [n]``; ``values [n, k_max]``: eigenvalues of
    ``Q(e_a)`` by ``|lambda|``; ``vectors [n, n_keep, d]``: the top eigenvectors.
    """

    ks: List[int]
    features: Int[Tensor, "n"]
    corr: Float[Tensor, "n n_k"]
    n_active: Int[Tensor, "n"]
    values: Float[Tensor, "n k_max"]
    vectors: Float[Tensor, "n n_keep d"]
    d: int = 0  # size of the interaction matrices: k >= d is the exact quadratic form

    def summary(self, threshold: float = 0.75) -> Dict[str, Any]:
        """``{"k", "mean", "frac_above_0.75", "median", "n_features"}`` (NaN correlations skipped)."""
        ok = ~self.corr.isnan()
        mean = [float(self.corr[:, j][ok[:, j]].mean()) if ok[:, j].any() else float("nan")
                for j in range(len(self.ks))]
        med = [float(self.corr[:, j][ok[:, j]].median()) if ok[:, j].any() else float("nan")
               for j in range(len(self.ks))]
        frac = [float((self.corr[:, j][ok[:, j]] > threshold).float().mean()) if ok[:, j].any()
                else float("nan") for j in range(len(self.ks))]
        return {"k": list(self.ks), "mean": mean, f"frac_above_{threshold}": frac, "median": med,
                "n_features": int(len(self.features)), "d": self.d}


def _pearson(s: Dict[str, Tensor]) -> Tensor:
    """Pearson correlation from streaming sums ``n, sx, sy, sxx, syy, sxy`` (float64)."""
    n = s["n"]
    cov = n * s["sxy"] - s["sx"] * s["sy"]
    var = (n * s["sxx"] - s["sx"] ** 2) * (n * s["syy"] - s["sy"] ** 2)
    return cov / var.clamp_min(0).sqrt()


def lowrank_correlation(
    model: Any,
    layer: int,
    directions: Float[Tensor, "n d_model"],
    x: Float[Tensor, "M d_model"],
    y: Float[Tensor, "M n"],
    ks: Sequence[int] = DEFAULT_KS,
    min_active: int = 10,
    chunk: int = 64,
    token_chunk: int = 4096,
    n_keep: int = 4,
) -> LowRank:
    """Correlation of ``sum_{i<=k} lambda_i (v_i . x)^2`` with ``y[:, a]`` over tokens with ``y > 0``.

    ``directions[a]`` is output feature ``a``'s direction (an output-SAE encoder row), ``y[:, a]`` its
    activation, ``x`` the MLP inputs. Features active on ``<= min_active`` tokens are skipped. ``k``
    larger than the interaction matrix (``d``) is clipped to ``d`` (the exact value). Eigenpairs come
    from :func:`bilinear_lens.eigendecompose` for ``chunk`` directions at a time.
    """
    from bilinear_lens import eigendecompose
    from bilinear_lens.decomposition.weights import bilinear_weights

    # dense: exact, and cheap at these widths (64 directions of d x d per call)
    d = bilinear_weights(model, layer).d
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}.")
    k_max = min(max(ks), d)
    idx = torch.tensor([min(k, d) - 1 for k in ks])
    active = y > 0
    n_active = active.sum(0)
    features = (n_active > min_active).nonzero().flatten()
    corr, values, vectors = [], [], []
    for part in tqdm(features.split(chunk), desc="low-rank correlation", leave=False):
        eig = eigendecompose(model, layer, directions[part], k=k_max, method="dense")
        values.append(eig.values.float())
        vectors.append(eig.vectors[:, :n_keep].float())
        act = active[:, part]
        rows = act.any(1).nonzero().flatten()
        shape = (len(part), len(ks))
        sums = {key: torch.zeros(shape, dtype=torch.float64) for key in ("n", "sx", "sy", "sxx", "syy", "sxy")}
        for r in rows.split(token_chunk):
            yhat = eig.activations(x[r]).cumsum(-1)[..., idx].double()  # [m, c, K]
            target = y[r][:, part].double().unsqueeze(-1).expand_as(yhat)
            m = act[r].unsqueeze(-1).expand_as(yhat).double()
            sums["n"] += m.sum(0)
            sums["sx"] += (m * yhat).sum(0)
            sums["sy"] += (m * target).sum(0)
            sums["sxx"] += (m * yhat.square()).sum(0)
            sums["syy"] += (m * target.square()).sum(0)
            sums["sxy"] += (m * yhat * target).sum(0)
        corr.append(_pearson(sums).float())
    empty = torch.zeros(0, len(ks))
    return LowRank(ks, features, torch.cat(corr) if corr else empty, n_active[features],
                   torch.cat(values) if values else torch.zeros(0, k_max),
                   torch.cat(vectors) if vectors else torch.zeros(0, n_keep, d), d)


def feature_interactions(model: Any, layer: int, sae_in: Any, directions: Float[Tensor, "n d_model"]
                         ) -> Float[Tensor, "n d_sae_in d_sae_in"]:
    """``D_in Q(u) D_in^T`` for each direction ``u`` (``D_in = sae_in.W_dec``, rows = features).

    With branch biases (``Q`` is ``[d_model + 1]^2``) the decoder rows get a 0 last coordinate:
    directions, not points, in ``[x, 1]`` coordinates.
    """
    from bilinear_lens import interaction_matrices

    Q = interaction_matrices(model, layer, directions).float()
    D = sae_in.W_dec.detach().float()
    if Q.shape[-1] == D.shape[1] + 1:
        D = torch.cat([D, torch.zeros_like(D[:, :1])], dim=1)
    return D @ Q @ D.T


def interaction_stats(Q_lat: Float[Tensor, "n d_sae d_sae"], top: int = 15) -> Dict[str, Tensor]:
    """Per-matrix self/cross statistics, vectorised: cross values are ``2 Q[b, c]`` for ``b < c``.

    Returns ``[n]`` tensors ``self_abs_mean``, ``cross_abs_mean``, ``cross_std`` and
    ``self_share_of_top`` (the fraction of self-interactions among the ``top`` largest ``|entries|``).
    """
    d = Q_lat.shape[-1]
    m = d * (d - 1) / 2
    diag = Q_lat.diagonal(dim1=-2, dim2=-1)
    off_abs = Q_lat.abs().sum((-1, -2)) - diag.abs().sum(-1)
    off_sum = Q_lat.sum((-1, -2)) - diag.sum(-1)
    off_sq = Q_lat.square().sum((-1, -2)) - diag.square().sum(-1)
    mean_c, mean_c2 = off_sum / m, 2 * off_sq / m
    weighted = torch.triu(Q_lat * (2 - torch.eye(d, dtype=Q_lat.dtype)))
    order = weighted.abs().flatten(-2).topk(min(top, d * (d + 1) // 2), dim=-1).indices
    is_self = (order // d) == (order % d)
    return {"self_abs_mean": diag.abs().mean(-1), "cross_abs_mean": off_abs / m,
            "cross_std": (mean_c2 - mean_c.square()).clamp_min(0).sqrt(),
            "self_share_of_top": is_self.float().mean(-1)}


def interaction_summary(Q_lat: Float[Tensor, "d_sae d_sae"], top: int = 15) -> Dict[str, Any]:
    """Top entries (``b <= c``; cross-interactions counted twice, ``2 Q[b, c]``) and self/cross stats."""
    d = Q_lat.shape[-1]
    weighted = torch.triu(Q_lat * (2 - torch.eye(d, dtype=Q_lat.dtype)))
    flat = weighted.flatten()
    order = flat.abs().topk(min(top, d * (d + 1) // 2)).indices.tolist()
    stats = {k: float(v[0]) for k, v in interaction_stats(Q_lat[None], top).items()}
    return {"top": [{"b": i // d, "c": i % d, "value": float(flat[i]),
                     "kind": "self" if i // d == i % d else "cross"} for i in order], **stats}


def match_eigenvectors(vectors: Float[Tensor, "m d"], decoder: Float[Tensor, "d_sae d_model"],
                       seed: int = 1234567) -> Dict[str, Any]:
    """``|cos|`` between eigenvectors and SAE decoder rows: best match each, and a one-to-one matching.

    Returns ``max_cos [m]`` and ``argmax [m]`` (tensors), ``hungarian_mean`` (mean ``|cos|`` of the
    optimal one-to-one assignment, ``scipy.optimize.linear_sum_assignment``) and the same statistics
    for ``m`` random unit vectors as a baseline. Homogeneous eigenvectors lose their last coordinate.
    """
    from scipy.optimize import linear_sum_assignment

    D = torch.nn.functional.normalize(decoder.detach().float(), dim=-1)
    V = vectors.float()[..., :D.shape[1]]
    V = torch.nn.functional.normalize(V, dim=-1)
    gen = torch.Generator().manual_seed(seed)
    R = torch.nn.functional.normalize(torch.randn(V.shape, generator=gen), dim=-1)
    out: Dict[str, Any] = {}
    for name, M in (("eigen", V), ("random", R)):
        cos = (M @ D.T).abs()
        best, arg = cos.max(-1)
        r, c = linear_sum_assignment(-cos.numpy())
        out[name] = {"max_cos": best, "argmax": arg, "mean_max_cos": float(best.mean()),
                     "hungarian_mean": float(cos[r, c].mean()), "hungarian_pairs": list(zip(r.tolist(), c.tolist()))}
    return out


def top_contexts(scores: Float[Tensor, "M"], acts: Activations, n: int = 5, window: int = 12,
                 after: int = 3, values: Optional[Float[Tensor, "M"]] = None) -> List[Dict[str, Any]]:
    """The ``n`` tokens with the largest ``scores``: ``{"row", "pos", "score", "tokens", "values"}``.

    ``tokens`` are ids from ``window`` tokens before to ``after`` after the token; ``values`` the
    per-token ``scores`` there (0 for dropped tokens), for highlighting. At most one hit per row.
    """
    grid = torch.zeros(acts.tokens.shape)
    grid[acts.row, acts.pos] = (values if values is not None else scores).float()
    order = scores.argsort(descending=True)
    seen, found = set(), []
    for i in order.tolist():
        if len(found) >= n or scores[i] <= 0:
            break
        row, pos = int(acts.row[i]), int(acts.pos[i])
        if row in seen:
            continue
        seen.add(row)
        lo, hi = max(0, pos - window), min(acts.tokens.shape[1], pos + after + 1)
        found.append({"row": row, "pos": pos, "score": float(scores[i]), "center": pos - lo,
                      "tokens": acts.tokens[row, lo:hi].tolist(), "values": grid[row, lo:hi].tolist()})
    return found
