"""``bilinear-lens train-lm``: train a bilinear (or SwiGLU) language model on a text file.

Every flag is a field of :class:`~bilinear_lens.language.train.LMTrainConfig` (the same name in the config
and in ``run.json``)::

    bilinear-lens train-lm --data train.txt --val-data validation.txt --out runs/lm/bilinear
    bilinear-lens train-lm ... --mlp swiglu --tokenizer runs/lm/bilinear/tokenizer --out runs/lm/swiglu
    torchrun --nproc_per_node 2 -m bilinear_lens.cli train-lm ...     (data parallel; add --fsdp to shard)
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bilinear_lens.config import add_arguments, from_args

OLD_FLAGS = {"batch_size": ("--batch",)}  # renamed flags still accepted (the fields' own aliases list the rest)


def add_commands(subparsers: Any) -> None:
    from bilinear_lens.language.config import LMTrainConfig

    p = subparsers.add_parser(
        "train-lm", help="train a bilinear (or SwiGLU) transformer language model",
        description="Train a HookedTransformer language model (RMSNorm, rotary attention, bilinear or SwiGLU "
                    "MLPs, untied embeddings) on a text file with a byte-level BPE tokenizer. Writes OUT/model "
                    "(Hugging Face Llama folder incl. tokenizer), OUT/metrics.json and resumable checkpoints in "
                    "OUT/checkpoint. Several processes: torchrun --nproc_per_node N -m bilinear_lens.cli train-lm ...",
    )
    add_arguments(p, LMTrainConfig, defaults={"out": None}, aliases=OLD_FLAGS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bilinear_lens.language.config import LMTrainConfig
    from bilinear_lens.language.train import train_lm

    result = train_lm(from_args(LMTrainConfig, args))
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: result.get(k) for k in ("mlp", "val_loss", "train_tokens", "steps", "n_params",
                                              "n_params_non_embedding", "tokens_per_second", "model_dir")}
        print(json.dumps(summary, indent=2))
    return 0
