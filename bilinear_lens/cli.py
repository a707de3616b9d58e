"""``bilinear-lens`` command line: one subcommand group per part of the package.

Each part registers its own subcommands through ``add_commands(subparsers)`` in its ``cli``
module; a subcommand stores its handler in ``func``. Only the part of the command being run is
imported (``COMMANDS``), and ``bilinear-lens --help`` imports none of them, so listing the commands
never loads torch or TransformerLens. Errors a handler raises (``ValueError``, including
:class:`bilinear_lens.runs.RunError`, and ``OSError`` such as a read-only ``--out``) are printed as
one line ``bilinear-lens CMD: error: ...`` with exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

COMMANDS: Dict[str, Tuple[str, str]] = {
    "mnist": ("bilinear_lens.image.cli",
              "train a bilinear MNIST / Fashion-MNIST classifier, decompose it, write a report"),
    "train-lm": ("bilinear_lens.language.cli", "train a bilinear (or SwiGLU) transformer language model"),
    "train-sae": ("bilinear_lens.sae.cli", "train a SAELens SAE on a bilinear layer's MLP input or output"),
    "compare": ("bilinear_lens.sae.cli", "eigenvectors vs SAE features: metrics.json + index.html"),
    "convert": ("bilinear_lens.convert.cli", "finetune a SwiGLU model into a bilinear one"),
    "import-model": ("bilinear_lens.published_cli",
                     "write a paper authors' published model as a plain Hugging Face Llama folder"),
    "import-sae": ("bilinear_lens.published_cli", "write a paper authors' published SAE in SAELens' format"),
    "atlas": ("bilinear_lens.atlas.cli", "decompose every output direction of a layer into a browsable atlas"),
}
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the full options of the command named in it, or (no command, or
    ``--help``) just the list of commands."""
    parser = argparse.ArgumentParser(
        prog="bilinear-lens",
        description="Bilinear-MLP models for TransformerLens: train, decompose, compare, convert.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None:
        for name, (_, text) in COMMANDS.items():
            sub.add_parser(name, help=text)
        return parser
    importlib.import_module(COMMANDS[command][0]).add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"bilinear-lens {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # read-only --out, full disk, EXDEV, ...
        from bilinear_lens.runs import os_error

        where = err.filename if err.filename is not None else getattr(args, "out", None) or "a file"
        print(f"bilinear-lens {args.command}: error: {os_error(err, where)}", file=sys.stderr)
        return 1
    return int(result or 0)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split("\n")).strip()
    return text or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
