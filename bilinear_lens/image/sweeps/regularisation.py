"""``bilinear-lens mnist --sweep regularisation``: how each regulariser changes the features.

Members: one-layer classifiers of one width, trained with no regularisation, AdamW weight decay,
Gaussian input noise on the pixels, both, and latent noise (``x + s * x.std() * N(0, 1)`` after the
bilinear layer, the first paper's choice), several seeds each. Per member and class ``c``:
accuracy, and the effective rank of the eigenvalues ``lambda_c [d]`` of ``Q(u_c)``::

    r_c = (sum_i |lambda_ci|)^2 / sum_i lambda_ci^2

(``common.effective_rank``). Pictures: the most positive eigenvector ``W_e^T v`` of each class per
setting (first seed, signs aligned to the unregularised model).
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch

from bilinear_lens.decomposition.eigen import eigendecompose
from bilinear_lens.image.data import ImageSplit
from bilinear_lens.image.figures import save_figure
from bilinear_lens.image.sweeps import plots
from bilinear_lens.image.sweeps.common import Recipe, effective_rank, train_member, write_sweep_index
from bilinear_lens.image.sweeps.sizes import positive_pictures
from bilinear_lens.runs import RunFolder

SETTINGS = {  # name -> (input noise, latent noise, weight decay)
    "none": (0.0, 0.0, 0.0),
    "weight decay": (0.0, 0.0, 1.0),
    "input noise": (0.4, 0.0, 0.0),
    "both": (0.4, 0.0, 1.0),
    "latent noise": (0.0, 0.33, 0.0),
}
PUBLISHED = {  # TMLR 9470 / maybenzion97 reproduction, full MNIST, 5 seeds (notes §6 rows 23-24)
    "none": (0.9749, 38.5), "weight decay": (0.9749, 15.5), "input noise": (0.9834, 82.2),
    "both": (0.9801, 26.0), "latent noise": (None, None),
}


def setting(quick: bool) -> Tuple[Recipe, Dict[str, Any]]:
    base = {"d_hidden": 300, "settings": {k: list(v) for k, v in SETTINGS.items()}}
    if quick:
        return Recipe(epochs=3, n_train=2000, n_test=1000), {**base, "seeds": [0]}
    return Recipe(epochs=10), {**base, "seeds": [0, 1, 2]}


def compute(run: RunFolder, recipe: Recipe, st: Dict[str, Any], split: ImageSplit, source: Dict[str, Any],
            progress: bool) -> Dict[str, Any]:
    members, pics, spectra = [], {}, {}
    for (name, (noise, latent, wd)), seed in itertools.product(st["settings"].items(), st["seeds"]):
        mcfg, tcfg = recipe.configs(st["d_hidden"], seed, input_noise=noise, latent_noise=latent, weight_decay=wd)
        fit = train_member(run, f"{name.replace(' ', '-')}-seed{seed}", mcfg, tcfg, split, source, progress)
        model = fit["model"]
        eig = eigendecompose(model, 0, model.head.weight)
        ranks = effective_rank(eig.values)
        members.append({"setting": name, "seed": seed, "test_accuracy": fit["test_accuracy"],
                        "effective_rank": ranks.tolist(), "reused": fit["reused"],
                        "train_seconds": fit["train_seconds"]})
        if seed == st["seeds"][0]:
            pics[name] = positive_pictures(model, eig.values, eig.vectors, 1)[:, 0]
            spectra[name] = eig.values.abs().sort(dim=1, descending=True).values.mean(0)
    names = list(st["settings"])
    summary = []
    for name in names:
        ms = [m for m in members if m["setting"] == name]
        er = torch.tensor([m["effective_rank"] for m in ms])  # [seeds, C]
        summary.append({"setting": name, "test_accuracy_mean": float(np.mean([m["test_accuracy"] for m in ms])),
                        "test_accuracy_seeds": [m["test_accuracy"] for m in ms],
                        "effective_rank_mean": float(er.mean()), "effective_rank_by_class": er.mean(0).tolist(),
                        "published_accuracy": PUBLISHED.get(name, (None, None))[0],
                        "published_effective_rank": PUBLISHED.get(name, (None, None))[1]})
    metrics: Dict[str, Any] = {"sweep": "regularisation", "settings": st, "members": members, "summary": summary}
    fig = run.file("figures")
    grid = plots.align_to_column(torch.stack([pics[n] for n in names], dim=1), 0)  # [C, S, 784]
    metrics["figures"] = {
        "summary": plots.rel(summary_figure(summary, members, spectra, fig / "summary.png"), run.path),
        "eigenvectors": plots.rel(plots.tile_grid(
            grid, [str(c) for c in range(grid.shape[0])], names, fig / "eigenvectors.png",
            f"Most positive eigenvector of each digit per regulariser (seed {st['seeds'][0]}, signs aligned to "
            "'none')"), run.path),
    }
    return metrics


def summary_figure(summary: List[Dict[str, Any]], members: List[Dict[str, Any]], spectra: Dict[str, torch.Tensor],
                   path) -> "Any":
    names = [s["setting"] for s in summary]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.6))
    plots.bars(a1, names, [[100 * a for a in s["test_accuracy_seeds"]] for s in summary], "test accuracy (%)",
               [None if s["published_accuracy"] is None else 100 * s["published_accuracy"] for s in summary])
    lo = min(100 * min(s["test_accuracy_seeds"]) for s in summary)
    a1.set_ylim(max(0, lo - 3), 100)
    a1.legend(fontsize=7, loc="lower right")
    a1.set_title("accuracy (dots: seeds)", fontsize=9)
    per_seed = [[float(np.mean(m["effective_rank"])) for m in members if m["setting"] == n] for n in names]
    plots.bars(a2, names, per_seed, "effective rank (Σ|λ|)² / Σλ², mean over digits",
               [s["published_effective_rank"] for s in summary], fmt="{:.1f}")
    a2.legend(fontsize=7)
    a2.set_title("eigenvalue effective rank", fontsize=9)
    cmap = plt.get_cmap("tab10")
    shown = min(100, len(next(iter(spectra.values()))))
    for i, n in enumerate(names):
        v = spectra[n].numpy()
        a3.semilogy(np.arange(1, len(v) + 1), v, color=cmap(i), lw=1.2, label=n)
    a3.set_xlim(1, shown)
    lo = min(float(s[:shown].min()) for s in spectra.values())
    hi = max(float(s.max()) for s in spectra.values())
    if lo > 0:
        a3.set_ylim(lo / 1.5, hi * 1.5)
    a3.set_xlabel("rank (by |λ|)")
    a3.set_ylabel("|λ|, mean over digits (log)")
    a3.set_title("spectra (first seed)", fontsize=9)
    a3.legend(fontsize=7)
    a3.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def index(run: RunFolder, metrics: Dict[str, Any], seconds: float) -> None:
    st = metrics["settings"]
    table = [["regulariser (input noise, latent noise, weight decay)", "test accuracy (mean over seeds)",
              "published", "effective rank (mean over digits)", "published"]]
    for s in metrics["summary"]:
        n, lat, wd = st["settings"][s["setting"]]
        pa, pr = s["published_accuracy"], s["published_effective_rank"]
        table.append([f"{s['setting']} ({n}, {lat}, {wd})", f"{100 * s['test_accuracy_mean']:.2f}%",
                      "–" if pa is None else f"{100 * pa:.2f}%", f"{s['effective_rank_mean']:.1f}",
                      "–" if pr is None else f"{pr:.1f}"])
    write_sweep_index(
        run, "Regularisation: accuracy and the rank of the features",
        f"One-layer bilinear MNIST classifiers, d={st['d_hidden']}, seeds {st['seeds']}, trained with each "
        "regulariser. Effective rank of class c: (Σ_i |λ_ci|)² / Σ_i λ_ci². Published: the TMLR reproduction "
        f"on the full 60k/10k MNIST (5 seeds). Wall time {seconds:.0f} s.", table,
        [(metrics["figures"]["summary"], "Accuracy, effective rank and spectra",
          "Bars: mean over seeds (dots: seeds; red: published reproduction). Right: |λ| by rank, mean over digits."),
         (metrics["figures"]["eigenvectors"], "Eigenvectors side by side",
          "The most positive eigenvector W_eᵀv of every digit under each regulariser (first seed); each tile "
          "scaled to its own max |value| (colour bar); signs aligned to the unregularised model.")])
