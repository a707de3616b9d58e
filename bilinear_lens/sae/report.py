"""``index.html`` for ``compare``: one static page (no scripts) built from ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Union

from bilinear_lens.reports.page import esc as _esc
from bilinear_lens.reports.page import write_page


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return _esc(x)


def context_html(ctx: Dict[str, Any]) -> str:
    """One context: tokens shaded by their value (red positive, blue negative), the hit outlined."""
    vals = ctx["values"]
    top = max((abs(v) for v in vals), default=0.0) or 1.0
    parts = []
    for i, (tok, v) in enumerate(zip(ctx["text"], vals)):
        a = min(1.0, abs(v) / top) * 0.75
        rgb = "220,40,40" if v >= 0 else "40,90,220"
        cls = ' class="c"' if i == ctx["center"] else ""
        parts.append(f'<span{cls} style="background:rgba({rgb},{a:.2f})">{_esc(tok)}</span>')
    return f'<div class="ctx" title="row {ctx["row"]}, position {ctx["pos"]}, value {ctx["score"]:.3g}">{"".join(parts)}</div>'


def _contexts(ctxs: List[Dict[str, Any]]) -> str:
    if not ctxs:
        return '<p class="note">(never active on these tokens)</p>'
    return "".join(context_html(c) for c in ctxs)


def _sae_table(sae: Dict[str, Any]) -> str:
    rows = [("explained_variance", "explained variance"), ("l0", "L0"),
            ("ce_loss_recovered", "CE loss recovered"), ("ce_loss_clean", "CE clean"),
            ("ce_loss_with_sae", "CE with SAE"), ("ce_loss_zero_ablation", "CE zero-ablated"),
            ("d_sae", "features"), ("architecture", "architecture")]
    sides = [s for s in ("in", "out") if s in sae]
    if not sides:
        return '<p class="note">No evals.json next to the SAEs (train them with <code>bilinear-lens train-sae</code>).</p>'
    head = "".join(f"<th>{_esc(sae[s].get('hook_name', s))}</th>" for s in sides)
    body = "".join(f'<tr><th class="l">{label}</th>' + "".join(f"<td>{_fmt(sae[s].get(key))}</td>" for s in sides)
                   + "</tr>" for key, label in rows)
    return f'<table><tr><th class="l">SAELens evals</th>{head}</tr>{body}</table>'


def _lowrank(m: Dict[str, Any]) -> str:
    lr = m["lowrank_correlation"]
    head = "".join(f"<th>{k}</th>" for k in lr["k"])
    mean = "".join(f"<td>{_fmt(v)}</td>" for v in lr["mean"])
    frac = "".join(f"<td>{_fmt(v)}</td>" for v in lr["frac_above_0.75"])
    imgs = "".join(f'<img src="{f}" width="48%">' for f in m.get("figures", {}).get("lowrank", []))
    return (f"<h2>2. Low-rank approximation of output features</h2>"
            f"<p>For each of the {lr['n_features']} output-SAE features active on more than "
            f"{m['config']['min_active']} tokens: Pearson correlation between "
            "<code>Σ<sub>i≤k</sub> λ<sub>i</sub> (v<sub>i</sub>·x)²</code> (top-k eigenvectors of the interaction "
            "matrix of the feature's encoder direction) and the feature's activation, over the tokens where it is active.</p>"
            f'<table><tr><th class="l">k</th>{head}</tr><tr><th class="l">mean r</th>{mean}</tr>'
            f'<tr><th class="l">fraction r &gt; 0.75</th>{frac}</tr></table>'
            + (f'<p class="note">k ≥ {lr["d"]} (the size of Q) is the exact quadratic form: there r = 1 up to '
               "the SAE's encoder bias and TopK selection, which only shift or zero the activation.</p>"
               if lr.get("d") and max(lr["k"]) >= lr["d"] else "")
            + '<p class="note">Paper (Pearce et al. 2025, §5.2): mean ≈ 0.65 with one eigenvector, most features above '
            "0.75 with two; a third-party reproduction found 32–65 % above 0.75.</p>" + imgs)


def _interactions(m: Dict[str, Any]) -> str:
    it = m["interactions"]
    a = it["all_features"]
    out = ["<h2>1. Feature interaction matrices in SAE bases</h2>",
           "<p><code>Q<sub>lat</sub>(a) = D<sub>in</sub> Q(e<sub>a</sub>) D<sub>in</sub><sup>T</sup></code>: how pairs of "
           "input-SAE features (decoder rows <code>D<sub>in</sub></code>) combine into output feature <code>a</code> "
           "(encoder row <code>e<sub>a</sub></code>). Diagonal = self-interactions, 2× off-diagonal = cross-interactions.</p>",
           f"<table><tr><th class='l'>over all qualifying output features</th><th>value</th></tr>"
           f"<tr><td class='l'>mean |self-interaction|</td><td>{_fmt(a['self_abs_mean'], 4)}</td></tr>"
           f"<tr><td class='l'>mean |cross-interaction|</td><td>{_fmt(a['cross_abs_mean'], 4)}</td></tr>"
           f"<tr><td class='l'>std of cross-interactions (paper: 0.004)</td><td>{_fmt(a['cross_std'], 4)}</td></tr>"
           f"<tr><td class='l'>share of self-interactions among the top {m['config']['top_interactions']}</td>"
           f"<td>{_fmt(a['self_share_of_top'])}</td></tr></table>"]
    for f in it["features"]:
        rows = "".join(f"<tr><td>{t['b']}</td><td>{t['c']}</td><td class='l'>{t['kind']}</td><td>{t['value']:+.4f}</td></tr>"
                       for t in f["top"][:10])
        corr = f.get("lowrank_corr")
        corr_txt = f" Low-rank r at k=1, 2: {_fmt(corr[0])}, {_fmt(corr[1])}." if corr and len(corr) > 1 else ""
        out.append(f"<h3>Output feature {f['feature']}</h3><p class='note'>Top eigenvalues: "
                   f"{', '.join(f'{v:+.3g}' for v in f['eigenvalues_top8'])}.{corr_txt}</p>"
                   f"<div class='cols'><div><img src='{f['figure']}'></div><div><table><tr><th>b</th><th>c</th>"
                   f"<th class='l'>kind</th><th>interaction</th></tr>{rows}</table></div></div>")
    return "".join(out)


def _matching(m: Dict[str, Any]) -> str:
    mt = m["matching"]
    ranks = "".join(f"<td>{_fmt(v)}</td>" for v in mt["mean_max_cos_by_rank"])
    heads = "".join(f"<th>{i + 1}</th>" for i in range(len(mt["mean_max_cos_by_rank"])))
    return ("<h2>3. Eigenvectors matched to input-SAE decoder directions</h2>"
            f"<p>{mt['n_eigenvectors']} top eigenvectors (by |λ|, of every qualifying output feature) against the "
            f"{mt['d_sae_in']} input-SAE decoder directions.</p>"
            f"<table><tr><th class='l'>eigenvector rank</th>{heads}</tr><tr><th class='l'>mean max |cos|</th>{ranks}</tr></table>"
            "<table><tr><th class='l'></th><th>eigenvectors</th><th>random directions</th></tr>"
            f"<tr><td class='l'>mean max |cos|</td><td>{_fmt(mt['mean_max_cos'])}</td><td>{_fmt(mt['random_mean_max_cos'])}</td></tr>"
            f"<tr><td class='l'>one-to-one (Hungarian) mean |cos|</td><td>{_fmt(mt['hungarian_mean_cos'])}</td>"
            f"<td>{_fmt(mt['random_hungarian_mean_cos'])}</td></tr></table>"
            f"<img src='{mt['figure']}' width='50%'>")


def _side_by_side(m: Dict[str, Any]) -> str:
    out = ["<h2>4. Side by side: eigenvectors and the SAE features they align with</h2>",
           "<p class='note'>Red shading: activation of the eigenvector (λ(v·x)², sign-corrected) or SAE feature on each "
           "token; the outlined token is the top-activating one.</p>"]
    for item in m["side_by_side"]:
        out.append(f"<h3>{_esc(item['title'])}</h3>")
        if item.get("contexts") is not None:
            out.append("<p><b>Top contexts of the output feature itself</b></p>" + _contexts(item["contexts"]))
        for e in item["eigenvectors"]:
            aligned = "".join(
                f"<p>input feature <b>{a['feature']}</b> (cos {a['cos']:+.2f})</p>{_contexts(a['contexts'])}"
                for a in e["aligned"])
            out.append(f"<div class='eig'><div class='cols'><div><p><b>eigenvector {e['rank']}</b>, λ = "
                       f"{e['eigenvalue']:+.4g}</p>{_contexts(e['contexts'])}</div><div>{aligned}</div></div></div>")
    return "".join(out)


def write_report(path: Union[str, Path], m: Dict[str, Any]) -> Path:
    """Render ``metrics`` (as written to ``metrics.json``) to a self-contained HTML page."""
    path = Path(path)
    vl = m.get("val_loss")
    vl_html = ""
    if vl:
        vl_html = ("<h2>Language models</h2><table><tr><th class='l'>MLP</th><th>validation loss</th></tr>"
                   + "".join(f"<tr><td class='l'>{_esc(k)}</td><td>{_fmt(v, 4)}</td></tr>" for k, v in vl.items())
                   + "</table><p class='note'>Paper (6-layer TinyStories, 5 epochs): bilinear 1.337, SwiGLU 1.321.</p>")
    title = f"Bilinear layer {m['layer']}: eigenvectors vs SAE features"
    body = [f"<h1>{_esc(title)}</h1>",
            f"<p class='note'>model <code>{_esc(m.get('model', ''))}</code>; {m['n_tokens']} tokens "
            f"({m['n_rows']} rows × {m['context']}, position 0 and BOS dropped).</p>",
            vl_html, "<h2>SAEs</h2>", _sae_table(m.get("sae", {})),
            _interactions(m), _lowrank(m), _matching(m), _side_by_side(m)]
    return write_page(path, title, "".join(body), heading=False)
