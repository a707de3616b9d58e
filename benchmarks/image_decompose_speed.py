"""How long decomposing a trained bilinear classifier takes, against training it (same run, same machine).

    python benchmarks/image_decompose_speed.py --model runs/fashion/seed0/model --data ../shared/data/fashion-mnist

Rows: full eigendecomposition of the last layer along the 10 head rows (dense ``eigh``), the top-30
eigenvectors by the implicit solver, HOSVD over the head rows, pixel projection ``W_e^T v``, and
the truncation curve k = 0..30 on the test set. Reference: one training epoch (timed on 20 steps
of the study's batch size, extrapolated) and a forward pass over the test set.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from bilinear_lens.decomposition.eigen import eigendecompose
from bilinear_lens.decomposition.hosvd import hosvd
from bilinear_lens.image.analysis import truncation_curve
from bilinear_lens.image.data import load_data
from bilinear_lens.image.model import BilinearClassifier, eigenvector_pixels


def timed(fn, repeat: int = 3):
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a saved BilinearClassifier folder (bilinear-lens mnist --out X: X/model)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data", default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = BilinearClassifier.load(args.model)
    split = load_data(args.data, args.dataset)
    L = model.cfg.n_layers - 1
    rows = []
    t, eig = timed(lambda: eigendecompose(model, L, model.head.weight))
    rows.append(("eigendecompose, full spectrum (dense)", t))
    rows.append(("eigendecompose, top 30 (implicit)", timed(lambda: eigendecompose(model, L, model.head.weight, k=30))[0]))
    rows.append(("hosvd over the head rows", timed(lambda: hosvd(model, L, model.head.weight))[0]))
    rows.append(("pixel projection W_e^T v (all)", timed(lambda: eigenvector_pixels(model, eig.vectors))[0]))
    rows.append(("truncation curve k=0..30 (test set)", timed(lambda: truncation_curve(model, eig, split.test), 1)[0]))
    # references, same run
    with torch.no_grad():
        t_fwd, _ = timed(lambda: model.predict(split.test.images))
    train_model = BilinearClassifier(model.cfg).train()
    opt = torch.optim.AdamW([p for p in train_model.parameters() if p.requires_grad], lr=1e-3)
    x, y = split.train.images[: args.batch_size], split.train.labels[: args.batch_size]

    def steps(n: int = 20) -> None:
        for _ in range(n):
            loss = F.cross_entropy(train_model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    t_steps, _ = timed(steps, 1)
    t_epoch = t_steps / 20 * math.ceil(len(split.train) / args.batch_size)
    print(f"model: {args.model}  d={model.cfg.d_hidden}, layers={model.cfg.n_layers}; threads={args.threads}; "
          f"train {len(split.train)}, test {len(split.test)}")
    print(f"{'operation':<42}{'seconds':>10}{'/ train epoch':>15}{'/ test forward':>16}")
    for name, t in rows + [("reference: test-set forward pass", t_fwd), ("reference: one training epoch (est.)", t_epoch)]:
        print(f"{name:<42}{t:>10.3f}{t / t_epoch:>15.3f}{t / t_fwd:>16.2f}")


if __name__ == "__main__":
    main()
