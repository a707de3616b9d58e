"""``bilinear-lens mnist --sweep sizes``: the same features at every width (paper P2 §4.2, App. F).

Members: one-layer classifiers with ``d_hidden`` in ``sizes`` (30 ... 1000) and several seeds each,
trained with the same recipe (input noise, weight decay). For each member ``(d, s)``:

* ``A_{d,s} [C, R, 784]``: pictures ``W_e^T v`` of the ``R`` most positive eigenvectors of every class
  (ranked by ``lambda``, descending);
* the truncation curve ``acc(k)``, ``k = 0..30`` eigenvectors per class kept by ``|lambda|``.

Similarity to the reference width ``d_ref = 300`` (all of its ``d_ref`` eigenvector pictures
``B_t [C, d_ref, 784]`` per seed ``t``): ``sim_d[r] = mean_{c, (s, t)} max_j |cos(A_{d,s}[c, r], B_t[c, j])|``
over seed pairs (``s != t`` when ``d = d_ref``); untrained reference-width models give the chance level.
Size-by-size heat map of the top eigenvector: ``H[d, d'] = mean_{c, (s, t)} |cos(A_{d,s}[c, 0], A_{d',t}[c, 0])|``.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from bilinear_lens.decomposition.eigen import eigendecompose
from bilinear_lens.image.analysis import truncation_curve
from bilinear_lens.image.data import ImageSplit
from bilinear_lens.image.model import BilinearClassifier, ClassifierConfig, eigenvector_pixels
from bilinear_lens.image.sweeps import plots
from bilinear_lens.image.sweeps.common import Recipe, best_match_cosine, train_member, write_sweep_index
from bilinear_lens.runs import RunFolder

SIZES = (30, 50, 100, 300, 500, 1000)
REFERENCE = 300


def setting(quick: bool) -> Tuple[Recipe, Dict[str, Any]]:
    """The full setting (paper widths, 3 seeds; the paper uses 5) or the quick one (2 seeds, 2k images, 3 epochs)."""
    settings = {"sizes": list(SIZES), "reference": REFERENCE, "ranks": 5, "ks": list(range(31)),
                "input_noise": 0.4, "weight_decay": 1.0}
    if quick:
        return Recipe(epochs=3, n_train=2000, n_test=1000), {**settings, "seeds": [0, 1]}
    return Recipe(epochs=10), {**settings, "seeds": [0, 1, 2]}


def positive_pictures(model: BilinearClassifier, values: Tensor, vectors: Tensor, n: int) -> Tensor:
    """``[C, n, 784]`` pictures of each class's ``n`` most positive eigenvectors (by ``lambda``)."""
    idx = values.topk(min(n, values.shape[1]), dim=1).indices
    return eigenvector_pixels(model, vectors[torch.arange(values.shape[0])[:, None], idx])


def pair_mean(fn, keys_a: List[Any], keys_b: List[Any], same: bool) -> Tensor:
    """Mean of ``fn(a, b)`` over all pairs, skipping ``a == b`` when ``same``."""
    vals = [fn(a, b) for a, b in itertools.product(keys_a, keys_b) if not (same and a == b)]
    if not vals:
        return torch.tensor(float("nan"))
    return torch.stack(vals).mean(0)


def similarities(pics: Dict[Tuple[int, int], Tensor], refs: Dict[int, Tensor], sizes: List[int],
                 seeds: List[int], reference: int, untrained: Dict[int, Tensor]) -> Dict[str, Any]:
    """``vs_reference`` (per size: mean over classes per rank, per class at rank 1) and the heat map."""
    vs: Dict[str, Any] = {}
    for d in sizes + ["untrained"]:
        src = (lambda s: untrained[s]) if d == "untrained" else (lambda s, d=d: pics[(d, s)])
        m = pair_mean(lambda s, t: best_match_cosine(src(s), refs[t]), seeds, seeds, d == reference)
        vs[str(d)] = {"mean_by_rank": m.mean(0).tolist(), "top_by_class": m[:, 0].tolist()}
    heat = [[float(pair_mean(lambda s, t: torch.nn.functional.cosine_similarity(
        pics[(a, s)][:, 0].double(), pics[(b, t)][:, 0].double(), dim=-1).abs().mean(), seeds, seeds, a == b))
        for b in sizes] for a in sizes]
    return {"vs_reference": vs, "heatmap_top": heat}


def _member(run: RunFolder, d: int, seed: int, recipe: Recipe, st: Dict[str, Any], split: ImageSplit,
            source: Dict[str, Any], progress: bool) -> Tuple[Dict[str, Any], Tensor, Optional[Tensor]]:
    mcfg, tcfg = recipe.configs(d, seed, input_noise=st["input_noise"], weight_decay=st["weight_decay"])
    fit = train_member(run, f"d{d}-seed{seed}", mcfg, tcfg, split, source, progress)
    model = fit["model"]
    eig = eigendecompose(model, 0, model.head.weight)
    curve = truncation_curve(model, eig, split.test, st["ks"])
    record = {"d_hidden": d, "seed": seed, "test_accuracy": fit["test_accuracy"], "truncation": curve,
              "reused": fit["reused"], "train_seconds": fit["train_seconds"]}
    pics = positive_pictures(model, eig.values, eig.vectors, st["ranks"])
    every = eigenvector_pixels(model, eig.vectors) if d == st["reference"] else None
    return record, pics, every


def compute(run: RunFolder, recipe: Recipe, st: Dict[str, Any], split: ImageSplit, source: Dict[str, Any],
            progress: bool) -> Dict[str, Any]:
    """Train or reuse every member, measure, draw, write ``index.html``; returns the metrics."""
    sizes, seeds, ref = list(st["sizes"]), list(st["seeds"]), st["reference"]
    if ref not in sizes:
        sizes = sorted(sizes + [ref])
    members, pics, refs = [], {}, {}
    for d, s in itertools.product(sizes, seeds):
        record, pics[(d, s)], every = _member(run, d, s, recipe, st, split, source, progress)
        if d == ref:
            refs[s] = every
        members.append(record)
    untrained = {}
    for s in seeds:
        torch.manual_seed(10_000 + s)
        model = BilinearClassifier(ClassifierConfig(d_hidden=ref)).eval()
        eig = eigendecompose(model, 0, model.head.weight)
        untrained[s] = positive_pictures(model, eig.values, eig.vectors, st["ranks"])
    metrics: Dict[str, Any] = {"sweep": "sizes", "settings": st, "members": members,
                               **similarities(pics, refs, sizes, seeds, ref, untrained)}
    metrics["by_size"] = summarise(members, sizes, metrics["vs_reference"])
    fig = run.file("figures")
    aligned = torch.stack([pics[(d, seeds[0])][:, 0] for d in sizes], dim=1)  # [C, S, 784]
    metrics["figures"] = {
        "similarity": plots.rel(plots.sizes_similarity(metrics, fig / "similarity.png"), run.path),
        "truncation": plots.rel(plots.sizes_truncation(metrics, fig / "truncation.png"), run.path),
        "eigenvectors": plots.rel(plots.tile_grid(
            plots.align_to_column(aligned, sizes.index(ref)), [str(c) for c in range(aligned.shape[0])],
            [f"d={d}" for d in sizes], fig / "eigenvectors.png",
            f"Most positive eigenvector of each digit, seed {seeds[0]}, per width (signs aligned to d={ref})"),
            run.path),
    }
    return metrics


def summarise(members: List[Dict[str, Any]], sizes: List[int], vs: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per size: accuracy mean/min/max over seeds, truncation at k = 1, 2, 5, 10, 20, similarity at rank 1."""
    rows = []
    for d in sizes:
        ms = [m for m in members if m["d_hidden"] == d]
        acc = torch.tensor([m["test_accuracy"] for m in ms])
        curves = torch.tensor([m["truncation"]["accuracy"] for m in ms])
        ks = ms[0]["truncation"]["k"]
        rows.append({"d_hidden": d, "seeds": len(ms), "test_accuracy_mean": float(acc.mean()),
                     "test_accuracy_min": float(acc.min()), "test_accuracy_max": float(acc.max()),
                     "truncation_mean": {str(k): float(curves[:, i].mean()) for i, k in enumerate(ks)
                                         if k in (0, 1, 2, 5, 10, 20, 30)},
                     "top_similarity_to_reference": vs[str(d)]["mean_by_rank"][0]})
    return rows


def index(run: RunFolder, metrics: Dict[str, Any], seconds: float) -> None:
    st = metrics["settings"]
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    table: List[List[str]] = [["d_hidden", "test accuracy (mean, min-max over seeds)", "top 1 / 2 / 5 / 20 per class",
                               f"top eigenvector vs d={st['reference']} (best match)"]]
    for r in metrics["by_size"]:
        t = r["truncation_mean"]
        table.append([str(r["d_hidden"]), f"{pct(r['test_accuracy_mean'])} ({pct(r['test_accuracy_min'])}-"
                      f"{pct(r['test_accuracy_max'])})", " / ".join(pct(t[k]) if k in t else "–" for k in ("1", "2", "5", "20")),
                      f"{r['top_similarity_to_reference']:.3f}"])
    table.append(["untrained", "", "", f"{metrics['vs_reference']['untrained']['mean_by_rank'][0]:.3f}"])
    write_sweep_index(
        run, "Model size: the same eigenvectors at every width",
        f"One-layer bilinear MNIST classifiers of widths {st['sizes']}, seeds {st['seeds']}, input noise "
        f"{st['input_noise']}, weight decay {st['weight_decay']}. Eigenvectors are compared in pixel space "
        f"(W_eᵀv), each against its best match among all eigenvectors of the same digit in a d={st['reference']} "
        f"model of another seed. Wall time {seconds:.0f} s.", table,
        [(metrics["figures"]["similarity"], "Similarity across widths",
          "Left: mean over digits and seed pairs of the best-match |cos| of the rank-r most positive eigenvector "
          f"to the d={st['reference']} models (dashed: untrained models, the chance level). Right: |cos| "
          "between the top eigenvectors of two widths (mean over digits and seed pairs; diagonal: across seeds)."),
         (metrics["figures"]["truncation"], "Truncation per width",
          "Accuracy and error (log scale) keeping the top-k eigenvectors per digit by |λ|; line: mean over seeds, "
          "band: min to max over seeds; k = 0 keeps none."),
         (metrics["figures"]["eigenvectors"], "Top eigenvectors per width",
          "The most positive eigenvector of every digit for each width (first seed), signs aligned to the "
          "reference width; each tile scaled to its own max |value| (colour bar).")])
