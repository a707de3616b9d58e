"""Consistency of eigenvectors across seeds (paper §4.2): train one-layer bilinear classifiers with
different seeds and compare each class's most positive eigenvector in pixel space, ``|cos(W_e^T v)|``.

    python benchmarks/image_consistency.py --data ../shared/data/fashion-mnist --root runs/fashion

Models are trained with the study's settings (``bilinear-lens mnist --dataset fashion-mnist``: d 512,
input noise 0.4, weight decay 0.5, 20 epochs) into ``ROOT/seed{S}/model`` and reused when present,
so a finished ``bilinear-lens mnist --seed S --out ROOT/seedS`` run counts as one of them. The
reference row compares the same quantity between untrained models (chance level).
Prints a table and writes ``ROOT/consistency.json`` (and ``--figure`` PNG if given).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import torch

from bilinear_lens.image.analysis import abs_cosine, top_positive_pixels
from bilinear_lens.image.data import load_data
from bilinear_lens.image.model import BilinearClassifier
from bilinear_lens.image.config import StudyConfig
from bilinear_lens.image.study import fit_in_run
from bilinear_lens.image.train import accuracy
from bilinear_lens.runs import open_run


def pixel_grid_figure(pixels: dict, class_names: list, path: Path) -> None:
    """Rows = seeds, columns = classes: the most positive eigenvector of each class in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bilinear_lens.image.figures import per_tile_colorbar, rgb_pattern, save_figure

    seeds = list(pixels)
    C, size, pad = len(class_names), 28, 3
    canvas = np.ones((len(seeds) * (size + pad), C * (size + pad), 3))
    ref = pixels[seeds[0]]
    for r, s in enumerate(seeds):
        for c in range(C):
            p = pixels[s][c].double()
            if float(p @ ref[c].double()) < 0:  # eigenvector signs are arbitrary: align to the first seed
                p = -p
            canvas[r * (size + pad):r * (size + pad) + size, c * (size + pad):c * (size + pad) + size] = \
                rgb_pattern(p.numpy(), size)
    fig = plt.figure(figsize=(C * 0.85 + 1.0, len(seeds) * 0.95 + 0.4))
    ax = fig.add_axes([0.06, 0.0, 0.84, 0.82])
    ax.imshow(canvas, interpolation="nearest")
    ax.axis("off")
    for c, name in enumerate(class_names):
        ax.text(c * (size + pad) + size / 2, -3, name, ha="center", va="bottom", fontsize=6.5)
    for r, s in enumerate(seeds):
        ax.text(-3, r * (size + pad) + size / 2, f"seed {s}", ha="right", va="center", fontsize=7)
    fig.suptitle("Most positive eigenvector per class, one row per training seed (signs aligned to the first "
                 "seed; each tile scaled to its own max |value|)", fontsize=8)
    per_tile_colorbar(fig, fig.add_axes([0.92, 0.1, 0.012, 0.7]), "value / max |value| of its tile")
    save_figure(fig, path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--data", default=None, help="data source (as for bilinear-lens mnist --data)")
    ap.add_argument("--root", default="runs/fashion", help="folder holding seed{S}/model")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--d-hidden", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--weight-decay", type=float, default=None)
    ap.add_argument("--match-top", type=int, default=3,
                    help="also report the best |cos| of one seed's top positive eigenvector against the other "
                         "seed's top-N positive ones (eigenvectors with close eigenvalues can swap order)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--figure", default=None, help="also draw the eigenvectors of every seed into this PNG")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    split = load_data(args.data, args.dataset)
    source = {"dataset": args.dataset, "source": split.source, "n_train": len(split.train),
              "n_test": len(split.test)}
    pixels, random_pixels, accs, train_s, top_pos = {}, {}, {}, {}, {}
    for seed in args.seeds:
        cfg = StudyConfig.flat(out=str(root / f"seed{seed}"), dataset=args.dataset, data=args.data, seed=seed,
                               epochs=args.epochs, d_hidden=args.d_hidden, batch_size=args.batch_size, lr=args.lr,
                               weight_decay=args.weight_decay).resolved()
        mcfg, tcfg = cfg.model_config(split.image_size, len(split.class_names)), cfg.train_config()
        with open_run(cfg.run.out, "mnist-seed", cfg.identity(), resume=True, owned=("model", "checkpoint")) as run:
            fit = fit_in_run(run, "", mcfg, tcfg, split, source)  # reuses a finished model/
            if not run.finished:
                run.finish(["model"])
        model = fit["model"].eval()
        accs[seed], train_s[seed] = accuracy(model, split.test), fit["train_seconds"]
        t0 = time.perf_counter()
        pixels[seed] = top_positive_pixels(model).detach()
        top_pos[seed] = top_positive_pixels(model, args.match_top).detach()
        decomp_s = time.perf_counter() - t0
        torch.manual_seed(seed)
        random_pixels[seed] = top_positive_pixels(BilinearClassifier(mcfg).eval()).detach()
        print(f"seed {seed}: test accuracy {100 * accs[seed]:.2f}%  (model {'reused' if fit['reused'] else 'trained'}; "
              f"decomposition {decomp_s:.2f} s)", flush=True)
    pairs = list(itertools.combinations(args.seeds, 2))
    if not pairs:
        raise SystemExit("give at least two seeds")
    cos = torch.stack([abs_cosine(pixels[a], pixels[b]) for a, b in pairs])  # [pairs, C]
    ref = torch.stack([abs_cosine(random_pixels[a], random_pixels[b]) for a, b in pairs])
    # best match: seed a's top positive eigenvector against the top-N positive ones of seed b, both ways
    best = torch.stack([
        0.5 * (abs_cosine(pixels[a][:, None], top_pos[b]).max(-1).values
               + abs_cosine(pixels[b][:, None], top_pos[a]).max(-1).values) for a, b in pairs])
    names = split.class_names
    header = (f"{'class':<12}" + "".join(f"{f'{a}-{b}':>8}" for a, b in pairs) + f"{'mean':>8}{'untrained':>11}"
              + f"{f'best-of-{args.match_top}':>11}")
    print("\n|cos| of the most positive eigenvector (pixel space) between seeds")
    print(header)
    for c, name in enumerate(names):
        row = "".join(f"{float(v):>8.3f}" for v in cos[:, c])
        print(f"{name:<12}{row}{float(cos[:, c].mean()):>8.3f}{float(ref[:, c].mean()):>11.3f}"
              f"{float(best[:, c].mean()):>11.3f}")
    mean, ref_mean = float(cos.mean()), float(ref.mean())
    best_mean = float(best.mean())
    print(f"{'mean':<12}" + "".join(f"{float(v):>8.3f}" for v in cos.mean(1)) + f"{mean:>8.3f}{ref_mean:>11.3f}"
          f"{best_mean:>11.3f}")
    print(f"\nmean |cos| {mean:.3f} over {len(names)} classes x {len(pairs)} seed pairs "
          f"(untrained reference {ref_mean:.3f}; ratio {mean / max(ref_mean, 1e-12):.1f}x); "
          f"best match among the other seed's top {args.match_top} positive: {best_mean:.3f}")
    result = {"dataset": args.dataset, "seeds": args.seeds, "test_accuracy": {str(s): a for s, a in accs.items()},
              "train_seconds": {str(s): t for s, t in train_s.items()},
              "pairs": [list(p) for p in pairs], "abs_cos": cos.tolist(), "mean_abs_cos": mean,
              "per_class_mean": dict(zip(names, cos.mean(0).tolist())), "untrained_mean_abs_cos": ref_mean,
              f"best_of_{args.match_top}_mean_abs_cos": best_mean,
              "settings": {"epochs": args.epochs, "d_hidden": args.d_hidden, "batch_size": args.batch_size,
                           "lr": args.lr, "weight_decay": args.weight_decay}}
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".consistency.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, root / "consistency.json")
    if args.figure:
        pixel_grid_figure(pixels, names, Path(args.figure))


if __name__ == "__main__":
    main()
