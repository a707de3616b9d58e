"""``bilinear-lens mnist``: train, decompose and report a bilinear image classifier (or run a sweep).

Every flag is a field of :class:`~bilinear_lens.image.config.StudyConfig` (the same name in the config and in
``run.json``), plus ``--sweep`` / ``--quick`` (:mod:`.sweep_cli`). Only light modules are imported to build
the options; torch and the study are imported inside the handler, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json

from bilinear_lens.config import add_arguments, from_args
from bilinear_lens.image.config import StudyConfig
from bilinear_lens.image.defaults import DATASET_DEFAULTS

OLD_FLAGS = {"progress": ("--quiet",)}  # renamed flags still accepted (hidden)


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
    add_arguments(p, StudyConfig, aliases=OLD_FLAGS)
    from bilinear_lens.image.sweep_cli import add_sweep_arguments

    add_sweep_arguments(p)
    p.set_defaults(func=run_mnist)


def run_mnist(args: argparse.Namespace) -> int:
    if getattr(args, "sweep", None):
        from bilinear_lens.image.sweep_cli import run_sweep_command

        return run_sweep_command(args)
    from bilinear_lens.image.study import run_study

    m = run_study(from_args(StudyConfig, args))
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
