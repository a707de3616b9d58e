"""``bilinear-lens`` command line: one subcommand group per part of the package.

Each part registers its own subcommands through ``add_commands(subparsers)`` in its ``cli``
module; a subcommand stores its handler in ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

COMMAND_MODULES = (
    "bilinear_lens.image.cli",  # mnist
    "bilinear_lens.language.cli",  # train-lm
    "bilinear_lens.sae.cli",  # train-sae, compare
    "bilinear_lens.convert.cli",  # convert
    "bilinear_lens.atlas.cli",  # atlas
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bilinear-lens",
        description="Bilinear-MLP models for TransformerLens: train, decompose, compare, convert.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"bilinear-lens {args.command}: error: {err}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
