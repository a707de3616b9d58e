"""Eigenvector hooks, truncation and HOSVD on a small MNIST bilinear classifier (real digits, CPU, ~1 min).

    python demos/eigen_hooks_mnist.py --out runs/eigen_hooks_mnist

Trains (or resumes) a one-layer ``BilinearClassifier`` on the 10,000 packaged MNIST digits, then:

1. caches ``layers.0.hook_eig`` for the test set with the head rows' eigendecompositions attached, and
   checks that the activations sum to the logits (``logit_c = sum_i lambda_ci (v_ci . x)^2``, no biases);
2. ablates, through an ordinary ``run_with_hooks`` hook on ``hook_eig``, the top eigenvector of each class
   and measures that class's recall, checking that the logit drops by exactly the ablated activation;
3. truncates the layer to the top-k eigenvectors per class (``truncated_mlp``): test accuracy vs k;
4. HOSVD of the layer restricted to the head rows: singular values.

Writes ``figure.png`` (also copied to ``docs/figures/decomposition_mnist.png`` with ``--figure``) and
``results.json`` into ``--out`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import bilinear_lens as bl  # noqa: E402
from bilinear_lens.hooks.truncation import truncation_sweep  # noqa: E402
from bilinear_lens.image.data import load_data  # noqa: E402
from bilinear_lens.image.model import BilinearClassifier  # noqa: E402
from bilinear_lens.image.train import TrainConfig, accuracy, train  # noqa: E402

HOOK_EIG, HOOK_IN = "layers.0.hook_eig", "layers.0.hook_in"


def write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/eigen_hooks_mnist")
    parser.add_argument("--d-hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--figure", default=None, help="also copy the figure here (e.g. docs/figures/decomposition_mnist.png)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_data()
    torch.set_num_threads(1)  # one thread: fastest on a shared machine
    torch.manual_seed(0)
    clf = BilinearClassifier(d_hidden=args.d_hidden, n_layers=1, input_noise=0.4)
    train(clf, data.train, TrainConfig(epochs=args.epochs, batch_size=128, weight_decay=0.5),
          checkpoint=out / "checkpoint", progress=False)
    clf.eval()
    test = data.test
    acc = accuracy(clf, test)
    print(f"test accuracy {acc:.4f} ({len(test)} digits)")

    U = clf.W_U.detach()  # [10, d]: the head rows are the output directions
    eig = bl.eigendecompose(clf, 0, U)  # full spectrum [10, d]
    results = {"test_accuracy": acc, "d_hidden": args.d_hidden, "n_test": len(test)}

    # 1. hook_eig in the cache; the activations sum to the logits
    with torch.no_grad(), bl.attach_eigenvectors(clf, 0, eig):
        logits, cache = clf.run_with_cache(test.images, names_filter=[HOOK_EIG, HOOK_IN])
    acts = cache[HOOK_EIG]  # [N, 10, d]
    results["max_abs_sum_minus_logit"] = float((acts.sum(-1) - logits).abs().max())
    results["max_abs_logit"] = float(logits.abs().max())
    print(f"sum_i act - logit: max {results['max_abs_sum_minus_logit']:.2e} (logits up to {results['max_abs_logit']:.1f})")

    # 2. ablate each class's top eigenvector through run_with_hooks
    recall, recall_ablated, exact_err = [], [], 0.0
    pred = logits.argmax(-1)
    for c in range(10):
        def ablate(value, hook, c=c):
            value = value.clone()
            value[:, c, 0] = 0.0
            return value

        with torch.no_grad(), bl.attach_eigenvectors(clf, 0, eig):
            ablated = clf.run_with_hooks(test.images, fwd_hooks=[(HOOK_EIG, ablate)])
        expected = logits.clone()
        expected[:, c] -= acts[:, c, 0]
        exact_err = max(exact_err, float((ablated - expected).abs().max()))
        mask = test.labels == c
        recall.append(float((pred[mask] == c).float().mean()))
        recall_ablated.append(float((ablated.argmax(-1)[mask] == c).float().mean()))
    results.update(recall=recall, recall_top1_ablated=recall_ablated, max_abs_ablation_error=exact_err)
    print("recall per class        ", " ".join(f"{r:.3f}" for r in recall))
    print("recall, top-1 ablated   ", " ".join(f"{r:.3f}" for r in recall_ablated))
    print(f"ablation: logit change - (-act) max {exact_err:.2e}")

    # 3. truncation: accuracy vs k
    ks = [0, 1, 2, 3, 5, 8, 12, 20, 30, 50, eig.k]
    with torch.no_grad():
        sweep = truncation_sweep(clf, 0, eig, ks, lambda: accuracy(clf, test))
    results["truncation"] = {"k": [k for k, _ in sweep], "accuracy": [a for _, a in sweep]}
    print("truncation k:accuracy   ", " ".join(f"{k}:{a:.4f}" for k, a in sweep))

    # 4. HOSVD over the head rows
    h = bl.hosvd(clf, 0, directions=U)
    results["hosvd_singular_values"] = [float(s) for s in h.singular_values]
    print("HOSVD singular values   ", " ".join(f"{s:.3f}" for s in h.singular_values))

    # figure
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    i = int((test.labels == 5).nonzero()[0])
    c = int(pred[i])
    top = acts[i, c].abs().argsort(descending=True)[:12]
    ax[0].bar(range(len(top)), acts[i, c, top].numpy(), color=["tab:blue" if v > 0 else "tab:red" for v in acts[i, c, top]])
    ax[0].set_xticks(range(len(top)), [str(int(t)) for t in top])
    ax[0].set(title=f"hook_eig of test digit #{i} (label 5), class {c}\nlogit {float(logits[i, c]):.2f} = sum of all {eig.k}",
              xlabel="eigenvector (rank by |lambda|)", ylabel="lambda_i (v_i . x)^2")
    x = range(10)
    ax[1].bar([v - 0.2 for v in x], recall, 0.4, label="clean")
    ax[1].bar([v + 0.2 for v in x], recall_ablated, 0.4, label="top eigenvector ablated via hook_eig")
    ax[1].set(title="per-class recall, ablating that class's top eigenvector", xlabel="digit", ylabel="recall", xticks=list(x))
    ax[1].legend(loc="center", fontsize=8, framealpha=0.9)
    tk, ta = results["truncation"]["k"], results["truncation"]["accuracy"]
    ax[2].plot(tk[1:-1], ta[1:-1], "o-", label="top-k per class (truncated_mlp)")
    ax[2].axhline(acc, color="gray", ls="--", label=f"full model, k={eig.k} ({acc:.3f})")
    ax[2].axhline(0.1, color="gray", ls=":", label="chance")
    ax[2].set(title="accuracy vs eigenvectors kept per class", xlabel="k (log scale)", ylabel="test accuracy", xscale="log")
    ax[2].legend(loc="lower right")
    fig.tight_layout()
    write_atomic(out / "figure.png", lambda p: fig.savefig(p, dpi=80, format="png"))
    write_atomic(out / "results.json", lambda p: Path(p).write_text(json.dumps(results, indent=1)))
    if args.figure:
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(args.figure), lambda p: shutil.copyfile(out / "figure.png", p))
    print(f"wrote {out / 'figure.png'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
