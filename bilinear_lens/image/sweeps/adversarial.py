"""``bilinear-lens mnist --sweep adversarial``: adversarial masks read off the weights (P2 §4.4, App. M).

Decoders: the ``n`` most positive eigenvectors of every digit's ``Q(u_c)`` as pixel pictures, stacked
into ``D [C n, 784]`` (rows ``W_e^T v_ci``). Encoders: the pseudo-inverse ``E = D^+ [784, C n]``, so
``D E = I``: mask ``m_ci = E[:, (c, i)]`` moves the projection ``(W_e^T v_cj) . x`` of eigenvector ``j``
by ``delta_ij`` and leaves every other top eigenvector of every digit unchanged. Sign: flipped so that
adding ``m_ci`` increases ``|(W_e^T v_ci) . x|`` on the mean test image of the other digits (a dot product
with pixels, no forward pass). Each mask is scaled to unit pixel std, then added as ``x + s m`` for
strengths ``s``. No gradient and no forward pass builds a mask. Baseline: the same mask with its pixels
randomly permuted (same values, same norm and std). Measured on the test images of the other digits:
accuracy and the fraction classified as the mask's digit, averaged over the top ``n_attack`` masks of
every digit.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from bilinear_lens.decomposition.eigen import eigendecompose
from bilinear_lens.image.data import ImageData, ImageSplit
from bilinear_lens.image.figures import draw_gray, draw_pattern, per_tile_colorbar, save_figure
from bilinear_lens.image.model import BilinearClassifier, eigenvector_pixels
from bilinear_lens.image.sweeps import plots
from bilinear_lens.image.sweeps.common import Recipe, train_member, write_sweep_index
from bilinear_lens.runs import RunFolder

MODELS = {"input noise 0.15": 0.15, "unregularised": 0.0}  # input noise std; both: residual, no weight decay


def setting(quick: bool) -> Tuple[Recipe, Dict[str, Any]]:
    base = {"d_hidden": 512, "residual": True, "models": dict(MODELS), "n_decoders": 10, "n_attack": 3,
            "seed": 0, "permutation_seed": 0}
    if quick:
        return (Recipe(epochs=3, n_train=2000, n_test=1000),
                {**base, "strengths": [round(0.05 * i, 3) for i in range(7)]})
    return Recipe(epochs=30), {**base, "strengths": [round(0.025 * i, 3) for i in range(13)]}


def decoders(model: BilinearClassifier, n: int) -> Float[Tensor, "C n P"]:
    """Pictures ``W_e^T v`` of each class's ``n`` most positive eigenvectors (by ``lambda``), from the weights."""
    eig = eigendecompose(model, 0, model.head.weight)
    idx = eig.values.topk(n, dim=1).indices
    return eigenvector_pixels(model, eig.vectors[torch.arange(eig.n)[:, None], idx]).detach()


@torch.no_grad()
def pinv_masks(dec: Float[Tensor, "C n P"], images: Optional[Tensor] = None,
               labels: Optional[Tensor] = None) -> Float[Tensor, "C n P"]:
    """Masks ``m_ci``: columns of ``pinv(D)`` for the stacked decoders ``D [C n, P]``, sign-fixed on
    ``images`` (pixel dot products only; none: no flip), each scaled to unit pixel std."""
    C, n, P = dec.shape
    D = dec.reshape(C * n, P).double()
    rank = int(torch.linalg.matrix_rank(D, rtol=1e-5))  # decoders are float32 pictures
    if rank < C * n:
        raise ValueError(f"the {C * n} decoders span only {rank} dimensions (d_hidden too small for {n} per "
                         f"class), so no mask can move one alone; use n_decoders <= d_hidden / {C}.")
    masks = torch.linalg.pinv(D).T.reshape(C, n, P)
    if images is not None:
        for c in range(C):
            others = images[labels != c].double().mean(0)  # [P]
            proj = dec[c].double() @ others  # [n]: projection of the mean other-digit image
            masks[c] *= torch.where(proj < 0, -1.0, 1.0)[:, None]
    return (masks / masks.std(-1, keepdim=True)).float()


@torch.no_grad()
def attack(model: BilinearClassifier, data: ImageData, mask: Tensor, target: int,
           strengths: Sequence[float]) -> Tuple[List[float], List[float]]:
    """Accuracy and fraction predicted as ``target`` on the images of other digits, per strength."""
    keep = data.labels != target
    x, y = data.images[keep], data.labels[keep]
    acc, hit = [], []
    for s in strengths:
        pred = model.predict(x + s * mask)
        acc.append(float((pred == y).float().mean()))
        hit.append(float((pred == target).float().mean()))
    return acc, hit


def permuted(mask: Tensor, gen: torch.Generator) -> Tensor:
    return mask[torch.randperm(mask.numel(), generator=gen)]


def evaluate(model: BilinearClassifier, split: ImageSplit, st: Dict[str, Any]) -> Tuple[Dict[str, Any], Tensor]:
    dec = decoders(model, st["n_decoders"])
    masks = pinv_masks(dec, split.test.images, split.test.labels)
    gen = torch.Generator().manual_seed(st["permutation_seed"])
    res: Dict[str, List[List[float]]] = {"pinv_accuracy": [], "pinv_as_target": [], "permuted_accuracy": [],
                                         "permuted_as_target": []}
    for c in range(masks.shape[0]):
        for r in range(st["n_attack"]):
            for kind, m in (("pinv", masks[c, r]), ("permuted", permuted(masks[c, r], gen))):
                acc, hit = attack(model, split.test, m, c, st["strengths"])
                res[f"{kind}_accuracy"].append(acc)
                res[f"{kind}_as_target"].append(hit)
    out = {k: np.mean(v, axis=0).tolist() for k, v in res.items()}
    out["per_mask"] = res
    return out, masks


def compute(run: RunFolder, recipe: Recipe, st: Dict[str, Any], split: ImageSplit, source: Dict[str, Any],
            progress: bool) -> Dict[str, Any]:
    metrics: Dict[str, Any] = {"sweep": "adversarial", "settings": st, "models": {}}
    shown = None
    for name, noise in st["models"].items():
        mcfg, tcfg = recipe.configs(st["d_hidden"], st["seed"], input_noise=noise, residual=st["residual"])
        fit = train_member(run, name.replace(" ", "-"), mcfg, tcfg, split, source, progress)
        res, masks = evaluate(fit["model"], split, st)
        metrics["models"][name] = {"test_accuracy": fit["test_accuracy"], "reused": fit["reused"],
                                   "train_seconds": fit["train_seconds"], **res}
        if shown is None:
            shown = (name, fit["model"], masks, decoders(fit["model"], 1)[:, 0])
    fig = run.file("figures")
    metrics["figures"] = {"curves": plots.rel(curves_figure(metrics, fig / "curves.png"), run.path),
                          "masks": plots.rel(masks_figure(*shown, split, st, fig / "masks.png"), run.path)}
    return metrics


def curves_figure(metrics: Dict[str, Any], path) -> Any:
    s = metrics["settings"]["strengths"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    cmap = plt.get_cmap("tab10")
    for i, (name, m) in enumerate(metrics["models"].items()):
        for kind, ls in (("pinv", "-"), ("permuted", "--")):
            label = f"{name}: {'pinv mask' if kind == 'pinv' else 'permuted mask'}"
            a1.plot(s, 100 * np.asarray(m[f"{kind}_accuracy"]), ls, marker="o", ms=3, color=cmap(i), label=label)
            a2.plot(s, 100 * np.asarray(m[f"{kind}_as_target"]), ls, marker="o", ms=3, color=cmap(i), label=label)
    a1.set_ylabel("accuracy on the other digits (%)")
    a2.set_ylabel("classified as the mask's digit (%)")
    a1.set_ylim(0, 100)
    top = max(max(m[f"{k}_as_target"]) for m in metrics["models"].values() for k in ("pinv", "permuted"))
    a2.set_ylim(0, max(1.0, 130 * top))  # the rates are small: a 0-100 axis would hide them
    for ax in (a1, a2):
        ax.set_xlabel("mask strength s (x + s·m, m at unit pixel std)")
        ax.grid(alpha=0.3)
    a1.legend(fontsize=7)
    n = metrics["settings"]["n_attack"]
    fig.suptitle(f"Adversarial masks from the weights (mean over the top {n} masks of every digit)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


@torch.no_grad()
def masks_figure(name: str, model: BilinearClassifier, masks: Tensor, top: Tensor, split: ImageSplit,
                 st: Dict[str, Any], path) -> Any:
    """Per digit: its top eigenvector, the rank-1 mask, its permutation, and one attacked test image."""
    s = st["strengths"][len(st["strengths"]) * 2 // 3]
    gen = torch.Generator().manual_seed(st["permutation_seed"])
    C = masks.shape[0]
    fig, axes = plt.subplots(C, 4, figsize=(5.2, 1.15 * C + 1.0), squeeze=False)
    heads = ["top eigenvector W_eᵀv", "pinv mask m", "permuted mask", f"x + {s}·m"]
    for c in range(C):
        x = split.test.images[split.test.labels != c][c]
        pics = [top[c], masks[c, 0], permuted(masks[c, 0], gen), x + s * masks[c, 0]]
        pred = int(model.predict((x + s * masks[c, 0])[None])[0])
        for j, p in enumerate(pics):
            ax = axes[c, j]
            img = p.numpy()
            if j == 3:
                draw_gray(ax, np.clip(img, 0, 1), 28)
                ax.set_title(f"pred {pred}", fontsize=6.5, pad=1, color="tab:red" if pred == c else "k")
            else:
                draw_pattern(ax, img, 28)
            if c == 0:
                ax.set_title(heads[j] + (f"\npred {pred}" if j == 3 else ""), fontsize=6.5,
                             color="tab:red" if j == 3 and pred == c else "k")
        axes[c, 0].set_ylabel(str(c), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Masks for the {name} model (rank-1 mask per digit; attacked image shown clipped to [0, 1])",
                 fontsize=7.5)
    fig.subplots_adjust(left=0.08, right=0.84, top=1 - 0.95 / (1.15 * C + 1.0), bottom=0.01, wspace=0.05,
                        hspace=0.3)
    per_tile_colorbar(fig, fig.add_axes([0.87, 0.3, 0.025, 0.4]))
    return save_figure(fig, path)


def index(run: RunFolder, metrics: Dict[str, Any], seconds: float) -> None:
    st = metrics["settings"]
    s = st["strengths"]
    cols = [i for i, v in enumerate(s) if v in (0.1, 0.2, 0.3)] or [len(s) - 1]
    table = [["model", "clean test accuracy"] + [f"s={s[i]}: accuracy pinv / permuted" for i in cols]
             + [f"s={s[i]}: as target pinv / permuted" for i in cols]]
    for name, m in metrics["models"].items():
        table.append([name, f"{100 * m['test_accuracy']:.2f}%"]
                     + [f"{100 * m['pinv_accuracy'][i]:.1f} / {100 * m['permuted_accuracy'][i]:.1f}%" for i in cols]
                     + [f"{100 * m['pinv_as_target'][i]:.1f} / {100 * m['permuted_as_target'][i]:.1f}%"
                        for i in cols])
    write_sweep_index(
        run, "Adversarial masks from the weights alone",
        f"One-layer residual bilinear MNIST classifiers, d={st['d_hidden']}, no weight decay. Masks: the "
        f"pseudo-inverse of the {st['n_decoders']} most positive eigenvectors of every digit (pixel pictures "
        "W_eᵀv stacked), one column per eigenvector, sign-fixed by a dot product with the mean image of the "
        "other digits, scaled to unit pixel std; no gradient and no forward pass. Baseline: the same mask with "
        f"its pixels permuted. Averaged over the top {st['n_attack']} masks of every digit, on the test images "
        f"of the other digits. Wall time {seconds:.0f} s.", table,
        [(metrics["figures"]["curves"], "Accuracy and targeted misclassification against strength",
          "Solid: pinv masks; dashed: the same masks with permuted pixels (same norm)."),
         (metrics["figures"]["masks"], "Masks",
          "Per digit: its most positive eigenvector, the rank-1 pinv mask, its permutation (each tile scaled "
          "to its own max |value|, colour bar), and a test image of another digit with the mask added, with "
          "the model's prediction (red: the mask's digit).")])
