"""``compare``: run the four analyses of :mod:`bilinear_lens.sae.compare` and write the report.

Output folder: a run folder (:mod:`bilinear_lens.runs`, kind ``compare``) holding ``metrics.json``,
``index.html`` and the PNG figures. The figures are drawn into a ``.bl-tmp-*`` folder inside it (the
same filesystem: a mount point as ``--out`` works) and renamed into place, ``index.html`` last; the
run is then marked finished (files verified on ``--resume``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from bilinear_lens.sae import figures
from bilinear_lens.sae.config import CompareConfig
from bilinear_lens.sae.compare import (check_sae, collect_activations, feature_interactions,
                                       interaction_stats, interaction_summary, lowrank_correlation, match_eigenvectors,
                                       top_contexts)
from bilinear_lens.runs import open_run, write_json
from bilinear_lens.runs.atomic import temp_sibling
from bilinear_lens.sae.evals import read_evals


def _decode(tokenizer: Any, ids: List[int]) -> List[str]:
    if tokenizer is None:
        return [f"<{i}>" for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def _contexts(scores: Tensor, acts: Any, tokenizer: Any, n: int) -> List[Dict[str, Any]]:
    found = top_contexts(scores, acts, n=n)
    for c in found:
        c["text"] = _decode(tokenizer, c.pop("tokens"))
    return found


def token_direction(model: Any, tokenizer: Any, token: str) -> Tensor:
    """``W_U[:, t] - mean(W_U, 1)`` for the single token ``token`` (clear error if it is several)."""
    if tokenizer is None:
        raise ValueError("--token needs a model with a tokenizer.")
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"token {token!r} is {len(ids)} tokens {ids}; pass a single token (e.g. ' happy').")
    W_U = model.W_U.detach().float()
    return W_U[:, ids[0]] - W_U.mean(1)


def _side_by_side(model: Any, layer: int, u: Tensor, title: str, acts: Any, sae_in: Any, cfg: CompareConfig,
                  tokenizer: Any, feature: Optional[int]) -> Dict[str, Any]:
    """Top eigenvectors of ``Q(u)``, the input-SAE features each aligns with, and top contexts."""
    from bilinear_lens import eigendecompose

    eig = eigendecompose(model, layer, u, k=cfg.n_eig, method="dense")
    eact = eig.activations(acts.x)[:, 0, :]  # [M, n_eig]
    D = torch.nn.functional.normalize(sae_in.W_dec.detach().float(), dim=-1)
    cos = eig.vectors[0].float()[:, :D.shape[1]] @ D.T  # [n_eig, d_sae_in]
    alive = (acts.z_in > 0).any(0).float()  # align with input features that fire on these tokens
    item: Dict[str, Any] = {"title": title, "feature": feature, "eigenvectors": []}
    if feature is not None:
        item["contexts"] = _contexts(acts.z_out[:, feature], acts, tokenizer, cfg.n_contexts)
    for i in range(eig.k):
        lam = float(eig.values[0, i])
        sign = 1.0 if lam >= 0 else -1.0
        best = (cos[i].abs() * alive).argsort(descending=True)[:cfg.n_align]
        item["eigenvectors"].append({
            "rank": i + 1, "eigenvalue": lam,
            "contexts": _contexts(sign * eact[:, i], acts, tokenizer, cfg.n_contexts),
            "aligned": [{"feature": int(b), "cos": float(cos[i, b]),
                         "contexts": _contexts(acts.z_in[:, b], acts, tokenizer, 3)} for b in best],
        })
    return item


def run_compare(model: Any, sae_in: Any, sae_out: Any, tokens: Int[Tensor, "n_rows context"],
                out: Union[str, Path], cfg: CompareConfig, tokenizer: Any = None,
                info: Optional[Dict[str, Any]] = None, *, identity: Optional[Dict[str, Any]] = None,
                resume: bool = False, overwrite: bool = False, inputs: Sequence[Any] = ()) -> Dict[str, Any]:
    """Compute every analysis on ``tokens``, write ``out/{metrics.json, index.html, *.png}``; return metrics.

    ``out`` is a run folder (module docstring; ``resume`` / ``overwrite`` as in every command);
    ``identity``: what else defines the result (the CLI adds the model's and SAEs' digests).
    """
    import json

    from bilinear_lens.sae.identity import tokens_digest

    cfg.check()
    check_sae(model, cfg.layer, sae_in, "in")
    check_sae(model, cfg.layer, sae_out, "out")
    ident = {"config": cfg.identity(), "tokens": tokens_digest(tokens), **(identity or {})}
    with open_run(out, "compare", ident, resume=resume, overwrite=overwrite, inputs=inputs,
                  owned=None) as run:
        if run.finished:
            return json.loads(run.file("metrics.json").read_text())
        tmp = temp_sibling(run.file("report"))
        tmp.mkdir()
        metrics = _analyse(model, sae_in, sae_out, tokens, tmp, cfg, tokenizer, info)
        run.move_in(tmp, last=("metrics.json", "index.html"))
        run.finish()
    return metrics


def _analyse(model: Any, sae_in: Any, sae_out: Any, tokens: Tensor, tmp: Path, cfg: CompareConfig,
             tokenizer: Any, info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Every analysis; figures, ``metrics.json`` and ``index.html`` written into ``tmp``."""
    from bilinear_lens.sae.report import write_report

    L = cfg.layer
    bos = getattr(tokenizer, "bos_token_id", None)
    acts = collect_activations(model, L, tokens, sae_in, sae_out, cfg.batch_size, bos)
    W_enc = sae_out.W_enc.detach().float()  # [d_model, d_sae_out]
    lr = lowrank_correlation(model, L, W_enc.T, acts.x, acts.z_out, cfg.ks, cfg.min_active)
    if len(lr.features) == 0:
        raise ValueError(f"no output-SAE feature is active on more than {cfg.min_active} of the "
                         f"{len(acts.x)} tokens; use more data (--rows) or a trained SAE.")
    summary = lr.summary()
    strength = lr.values[:, :2].abs().sum(1)
    shown = lr.features[strength.argsort(descending=True)[:cfg.n_show]].tolist()
    if cfg.feature is not None:
        if not 0 <= cfg.feature < W_enc.shape[1]:
            raise ValueError(f"--feature {cfg.feature} is not an output-SAE feature (0..{W_enc.shape[1] - 1}).")
        shown = [cfg.feature] + [f for f in shown if f != cfg.feature][:cfg.n_show - 1]
    pos_of = {int(f): i for i, f in enumerate(lr.features)}

    metrics: Dict[str, Any] = dict(info or {})
    metrics.update({"layer": L, "n_tokens": int(len(acts.x)), "n_rows": int(tokens.shape[0]),
                    "context": int(tokens.shape[1]), "config": cfg.identity(),
                    "sae": metrics.get("sae", {}), "lowrank_correlation": summary})
    figs: Dict[str, str] = {}
    frac = summary["frac_above_0.75"]
    figures.lowrank_curve(lr.ks, summary["mean"], frac, tmp / "lowrank_curve.png")
    figures.lowrank_hist(lr.corr.numpy(), lr.ks, tmp / "lowrank_hist.png")
    figs["lowrank"] = ["lowrank_curve.png", "lowrank_hist.png"]

    metrics["interactions"] = _interaction_section(model, L, sae_in, W_enc, lr, shown, pos_of, cfg, tmp)
    metrics["matching"] = _matching_section(lr, sae_in, tmp)
    # 4. side by side
    sbs = [_side_by_side(model, L, W_enc.T[shown[0]], f"output feature {shown[0]}", acts, sae_in, cfg,
                         tokenizer, shown[0])]
    if cfg.token is not None:
        sbs.append(_side_by_side(model, L, token_direction(model, tokenizer, cfg.token),
                                 f"token direction {cfg.token!r}", acts, sae_in, cfg, tokenizer, None))
    metrics["side_by_side"] = sbs
    metrics["figures"] = figs
    write_json(tmp / "metrics.json", metrics)
    write_report(tmp / "index.html", metrics)
    return metrics


def _interaction_section(model: Any, L: int, sae_in: Any, W_enc: Tensor, lr: Any, shown: List[int],
                         pos_of: Dict[int, int], cfg: CompareConfig, tmp: Path) -> Dict[str, Any]:
    """1. Feature interaction matrices in SAE bases: statistics over every scored output feature, and a heatmap
    for each shown one."""
    stats: Dict[str, List[float]] = {}
    for part in lr.features.split(32):
        for key, v in interaction_stats(feature_interactions(model, L, sae_in, W_enc.T[part]),
                                        cfg.top_interactions).items():
            stats.setdefault(key, []).extend(v.tolist())
    shown_items = []
    for f, Q_lat in zip(shown, feature_interactions(model, L, sae_in, W_enc.T[shown])):
        s = interaction_summary(Q_lat, cfg.top_interactions)
        labels = sorted({t["b"] for t in s["top"]} | {t["c"] for t in s["top"]})[:20]
        sub = Q_lat[labels][:, labels].numpy()
        vals = lr.values[pos_of[f]].numpy() if f in pos_of else \
            _values_for(model, L, W_enc.T[f], max(lr.ks))
        name = f"interactions_{f}.png"
        figures.interaction_heatmap(sub, labels, vals, f"output feature {f}", tmp / name)
        s.update({"feature": f, "figure": name, "eigenvalues_top8": [float(v) for v in vals[:8]],
                  "lowrank_corr": lr.corr[pos_of[f]].tolist() if f in pos_of else None})
        shown_items.append(s)
    return {"features": shown_items, "all_features": {key: _mean(v) for key, v in stats.items()}}


def _matching_section(lr: Any, sae_in: Any, tmp: Path) -> Dict[str, Any]:
    """3. Eigenvectors matched to input-SAE decoder directions (against random directions)."""
    n_keep = lr.vectors.shape[1]
    match = match_eigenvectors(lr.vectors.reshape(-1, lr.vectors.shape[-1]), sae_in.W_dec)
    eig_max = match["eigen"]["max_cos"].reshape(-1, n_keep)
    rnd_max = match["random"]["max_cos"]
    figures.matching_hist(eig_max[:, 0].numpy(), rnd_max.reshape(-1, n_keep)[:, 0].numpy(), tmp / "matching.png")
    return {
        "n_eigenvectors": int(eig_max.numel()), "d_sae_in": int(sae_in.W_dec.shape[0]),
        "mean_max_cos_by_rank": eig_max.mean(0).tolist(),
        "mean_max_cos": match["eigen"]["mean_max_cos"],
        "random_mean_max_cos": match["random"]["mean_max_cos"],
        "hungarian_mean_cos": match["eigen"]["hungarian_mean"],
        "random_hungarian_mean_cos": match["random"]["hungarian_mean"],
        "frac_top1_above_0.5": float((eig_max[:, 0] > 0.5).float().mean()),
        "figure": "matching.png",
    }


def _values_for(model: Any, layer: int, u: Tensor, k: int):
    from bilinear_lens import eigendecompose

    eig = eigendecompose(model, layer, u, k=min(k, model.cfg.d_model), method="dense")
    return eig.values[0].float().numpy()


def _mean(xs: List[float]) -> float:
    xs = [x for x in xs if x == x]
    return float(sum(xs) / len(xs)) if xs else float("nan")


def sae_info(sae_in_dir: Union[str, Path], sae_out_dir: Union[str, Path]) -> Dict[str, Any]:
    """``{"sae": {"in": evals, "out": evals}}`` from the SAE folders' ``evals.json`` (without raw metrics)."""
    out = {}
    for side, d in (("in", sae_in_dir), ("out", sae_out_dir)):
        ev = read_evals(d)
        ev.pop("sae_lens", None)
        out[side] = {"path": str(d), **ev}
    return {"sae": out}
