"""``bilinear-lens convert``: finetune a SwiGLU Llama folder into a bilinear one (or the baseline).

Every flag is a field of :class:`~bilinear_lens.convert.config.ConvertConfig` (the same name in the config and
in ``run.json``); the defaults are the best measured recipe (docs/convert.md)::

    bilinear-lens convert --model ../shared/models/stories260k \\
        --data ../shared/data/tinystories/train.txt --tokens 2000000 --out runs/convert/bilinear-2M
    bilinear-lens convert ... --baseline --out runs/convert/baseline-2M

Several GPUs: ``accelerate launch --num_processes N -m bilinear_lens.cli convert ...`` (same arguments; add
``--fsdp`` to shard the model). CPU processes: ``torchrun --nproc_per_node N -m bilinear_lens.cli convert ...``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bilinear_lens.config import add_arguments, from_args


def add_commands(subparsers: Any) -> None:
    from bilinear_lens.convert.config import ConvertConfig

    p = subparsers.add_parser("convert", help="finetune a SwiGLU model into a bilinear one",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, ConvertConfig)
    p.set_defaults(func=handle_convert)


def handle_convert(args: argparse.Namespace) -> int:
    from bilinear_lens.convert.config import ConvertConfig
    from bilinear_lens.convert.finetune import run_convert

    metrics = run_convert(from_args(ConvertConfig, args))
    if int(os.environ.get("RANK", "0")) != 0:  # several processes: one summary
        return 0
    summary = {k: metrics[k] for k in ("mode", "tokens", "val_loss_original", "val_loss_start", "val_loss_final")}
    print(json.dumps(summary, indent=1))
    print(f"model: {args.out}/model   metrics: {args.out}/metrics.json")
    return 0
