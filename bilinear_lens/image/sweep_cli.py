"""The ``--sweep`` / ``--quick`` options of ``bilinear-lens mnist`` (light: the sweeps are imported only to run one)."""

from __future__ import annotations

import argparse
import json

# Study options a sweep does not take (each sweep fixes its own recipe): flag -> argparse dest.
STUDY_ONLY = {"--dataset": "dataset", "--epochs": "epochs", "--d-hidden": "d_hidden", "--layers": "layers",
              "--residual": "residual", "--seed": "seed", "--batch-size": "batch_size", "--lr": "lr",
              "--weight-decay": "weight_decay", "--input-noise": "input_noise", "--latent-noise": "latent_noise",
              "--unregularised": "unregularised", "--n-train": "n_train", "--n-test": "n_test"}


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``--sweep``, ``--quick``, and ``--resume`` / ``--overwrite`` unless the parser has them already."""
    p.add_argument("--sweep", choices=("sizes", "regularisation", "adversarial"), default=None,
                   help="run one of the paper's sweeps instead of a single study (docs/image.md); default "
                        "--out mnist-sweep-NAME")
    p.add_argument("--quick", action="store_true",
                   help="with --sweep: the small setting (2k training images, 3 epochs, fewer seeds; minutes)")
    for flag, text in (("--resume", "continue the run in --out (finished parts are reused)"),
                       ("--overwrite", "replace the run in --out")):
        try:
            p.add_argument(flag, action="store_true", help=text)
        except argparse.ArgumentError:  # the study's own option of the same name serves both
            pass


def run_sweep_command(args: argparse.Namespace) -> int:
    from bilinear_lens.image.sweeps import SweepOptions, run_sweep
    from bilinear_lens.runs import RunError

    defaults = {"dataset": "mnist", "layers": 1, "seed": 0, "residual": False, "unregularised": False}
    given = [flag for flag, dest in STUDY_ONLY.items()
             if getattr(args, dest, None) not in (None, defaults.get(dest))]
    if given:
        raise RunError(f"{given[0]} does not apply to --sweep (each sweep fixes its recipe, docs/image.md); "
                       "drop it, or run without --sweep.")
    out = None if args.out == "mnist-study" else args.out
    m = run_sweep(args.sweep, SweepOptions(out=out, data=args.data, quick=args.quick, resume=args.resume,
                                           overwrite=args.overwrite, progress=not args.no_progress,
                                           threads=args.threads or None))
    print(json.dumps({"sweep": args.sweep, "seconds": round(m.get("seconds", 0.0), 1),
                      "reused_finished_run": m.get("reused_finished_run", False)}))
    print(f"report: {m.get('out', out)}/index.html")
    return 0
