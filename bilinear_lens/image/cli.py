"""``bilinear-lens mnist``: train, decompose and report a bilinear image classifier.

Builds its options from :mod:`bilinear_lens.image.defaults` only; torch and the study are imported
inside the handler, so ``bilinear-lens --help`` stays fast."""

from __future__ import annotations

import argparse
import json

from bilinear_lens.image.defaults import DATASET_DEFAULTS, HUB_PREFIX


def _defaults_text() -> str:
    return "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items()) for name, d in DATASET_DEFAULTS.items())


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mnist",
        help="train a bilinear MNIST / Fashion-MNIST classifier, decompose it, write a report",
        description="Train a bilinear image classifier, eigendecompose it from its weights and write "
                    "metrics.json, figures, index.html and model/ into the run folder --out. --out must be "
                    "new, empty, or an earlier mnist run: the same settings need --resume (a finished run is "
                    "verified and returned as is), other settings --overwrite; any other folder or a file is "
                    "refused and left untouched. Defaults per dataset: " + _defaults_text() + ".",
    )
    p.add_argument("--dataset", choices=sorted(DATASET_DEFAULTS), default="mnist",
                   help="class names and defaults (default: mnist)")
    p.add_argument("--data", default=None,
                   help="a local folder of idx .gz files or an .npz (images/labels or x_train/y_train/x_test/y_test), "
                        f"or a Hugging Face hub dataset written {HUB_PREFIX}OWNER/NAME (any other string is a local "
                        "path, so a mistyped path fails at once); default for mnist: the 10k real digits shipped "
                        "with the package (fixed 8k/2k split), for fashion-mnist: zalando-datasets/fashion_mnist "
                        "(needs network)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--d-hidden", type=int, default=None, help="embedding / bilinear width d")
    p.add_argument("--layers", type=int, default=1, help="number of bilinear layers (default 1)")
    p.add_argument("--residual", action="store_true", help="add residual connections around the bilinear layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--input-noise", type=float, default=None, help="std of Gaussian pixel noise while training")
    p.add_argument("--latent-noise", type=float, default=None,
                   help="s in x + s*x.std()*N(0,1) after each bilinear layer while training")
    p.add_argument("--unregularised", action="store_true",
                   help="also train the same model without noise and weight decay and report it alongside")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--n-test", type=int, default=None, help="use only the first N test images")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: fastest on a shared machine; 0 = torch's default)")
    p.add_argument("--out", default="mnist-study", help="run folder (default: mnist-study)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (a finished run is verified and "
                            "its metrics returned)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace another mnist run in --out (the old one is kept until the new one has its "
                            "first checkpoint)")
    p.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)  # old name
    from bilinear_lens.image.sweep_cli import add_sweep_arguments

    add_sweep_arguments(p)
    p.set_defaults(func=run_mnist)


def run_mnist(args: argparse.Namespace) -> int:
    if getattr(args, "sweep", None):
        from bilinear_lens.image.sweep_cli import run_sweep_command

        return run_sweep_command(args)
    from bilinear_lens.image.study import StudyConfig, run_study

    cfg = StudyConfig(out=args.out, dataset=args.dataset, data=args.data, epochs=args.epochs, d_hidden=args.d_hidden,
                      n_layers=args.layers, residual=args.residual, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, input_noise=args.input_noise, latent_noise=args.latent_noise,
                      seed=args.seed, n_train=args.n_train, n_test=args.n_test, unregularised=args.unregularised,
                      threads=args.threads, progress=not args.no_progress, resume=args.resume,
                      overwrite=args.overwrite)
    m = run_study(cfg)
    at = dict(zip(m["truncation"]["k"], m["truncation"]["accuracy"]))
    summary = {
        "test_accuracy": round(m["test_accuracy"], 4),
        "top20_accuracy": round(at[20], 4) if 20 in at else None,
        "decomposition_seconds": round(m["seconds"]["decomposition"]["total"], 3),
        "total_seconds": round(m["seconds"]["total"], 1),
    }
    if "unregularised" in m:
        summary["unregularised_test_accuracy"] = round(m["unregularised"]["test_accuracy"], 4)
    print(json.dumps(summary))
    print(f"report: {args.out}/index.html")
    return 0
