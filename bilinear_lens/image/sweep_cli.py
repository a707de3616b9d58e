"""The ``--sweep`` / ``--quick`` options of ``bilinear-lens mnist`` (light: the sweeps are imported only to run one).

A sweep fixes its own recipe, so the study's settings (every :class:`StudyConfig` field but ``data`` and the
run options) are refused with ``--sweep`` when given other values than their defaults."""

from __future__ import annotations

import argparse
import json

from bilinear_lens.config import flag_name, from_args
from bilinear_lens.image.config import StudyConfig, SweepOptions

STUDY_ONLY = [name for name in StudyConfig.__dataclass_fields__ if name not in ("data", "run")]


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """``--sweep`` and ``--quick`` (the run options are the study's own)."""
    p.add_argument("--sweep", choices=("sizes", "regularisation", "adversarial"), default=None,
                   help="run one of the paper's sweeps instead of a single study (docs/image.md); default "
                        "--out mnist-sweep-NAME")
    p.add_argument("--quick", action="store_true", help=SweepOptions.__dataclass_fields__["quick"].metadata["help"]
                   + " (with --sweep)")


def run_sweep_command(args: argparse.Namespace) -> int:
    from bilinear_lens.image.sweeps import run_sweep
    from bilinear_lens.runs import RunError

    study = from_args(StudyConfig, args)
    default = StudyConfig()
    given = [flag_name(name) for name in STUDY_ONLY if getattr(study, name) != getattr(default, name)]
    if given:
        raise RunError(f"{given[0]} does not apply to --sweep (each sweep fixes its recipe, docs/image.md); "
                       "drop it, or run without --sweep.")
    out = None if args.out == default.run.out else args.out
    options = from_args(SweepOptions, args).updated(out=out)
    m = run_sweep(args.sweep, options)
    print(json.dumps({"sweep": args.sweep, "seconds": round(m.get("seconds", 0.0), 1),
                      "reused_finished_run": m.get("reused_finished_run", False)}))
    print(f"report: {m.get('out', out)}/index.html")
    return 0
