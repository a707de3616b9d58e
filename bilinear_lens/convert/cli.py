"""``bilinear-lens convert``: finetune a SwiGLU Llama folder into a bilinear one (or the baseline).

Example (the stories260k run of docs/convert.md)::

    bilinear-lens convert --model ../shared/models/stories260k \\
        --data ../shared/data/tinystories/train.txt --tokens 2000000 --seq-len 256 \\
        --batch-size 32 --distill 0.9 --lr 3e-3 --warmup 10 --out runs/convert/bilinear-2M
    bilinear-lens convert ... --baseline --out runs/convert/baseline-2M

Several GPUs: ``accelerate launch --num_processes N -m bilinear_lens.cli convert ...`` (same
arguments; add ``--fsdp`` to shard the model). CPU processes: ``torchrun --nproc_per_node N -m
bilinear_lens.cli convert ...``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from typing import Any

from bilinear_lens.convert.finetune import ConvertConfig, run_convert


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("convert", help="finetune a SwiGLU model into a bilinear one",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = {f.name: f.default for f in fields(ConvertConfig)}
    p.add_argument("--model", required=True, help="SwiGLU Llama: a local Hugging Face folder, or a Hub repo "
                   "id such as TinyLlama/TinyLlama-1.1B-Chat-v1.0 (fetched into the Hub cache)")
    p.add_argument("--data", required=True, help="text file (stories separated by <|endoftext|> "
                   "lines) or a Hugging Face dataset name")
    p.add_argument("--out", required=True, help="output folder: run.json, checkpoint/, model/, metrics.json")
    p.add_argument("--tokens", type=int, default=d["tokens"], help="training tokens (default %(default)s)")
    p.add_argument("--baseline", action="store_true", help="keep the SiLU gate (equal-token baseline)")
    p.add_argument("--distill", type=float, nargs="?", const=0.5, default=d["distill"],
                   help="weight w of KL(original || student) in (1-w) CE + w KL; --distill alone = 0.5")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    p.add_argument("--val-data", default=None,
                   help="validation text file (default: validation.txt next to --data)")
    for name, typ in (("val_stories", int), ("val_max_len", int), ("seq_len", int), ("batch_size", int),
                      ("grad_accum", int), ("lr", float), ("weight_decay", float), ("warmup", int),
                      ("min_lr_ratio", float), ("anneal_frac", float), ("grad_clip", float),
                      ("seed", int), ("first_n_layers", int), ("train_limit", int),
                      ("eval_every", int), ("checkpoint_every", int), ("threads", int)):
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=d[name],
                       help=f"default {d[name]}")
    p.add_argument("--lr-decay", choices=("cosine", "constant"), default=d["lr_decay"])
    p.add_argument("--beta-schedule", choices=("linear", "cosine"), default=d["beta_schedule"])
    p.add_argument("--text-field", default=d["text_field"], help="column of a HF dataset")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (where the device supports it)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations")
    p.add_argument("--fsdp", action="store_true", help="shard weights, gradients and optimiser state "
                   "over the launched processes (torch FSDP2, one unit per block)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle_convert)


def config_from_args(args: argparse.Namespace) -> ConvertConfig:
    kw = {f.name: getattr(args, f.name) for f in fields(ConvertConfig) if hasattr(args, f.name)}
    kw["mode"] = "baseline" if args.baseline else "bilinear"
    kw["progress"] = not args.no_progress
    return ConvertConfig(**kw)


def handle_convert(args: argparse.Namespace) -> int:
    metrics = run_convert(config_from_args(args))
    if int(os.environ.get("RANK", "0")) != 0:  # several processes: one summary
        return 0
    summary = {k: metrics[k] for k in ("mode", "tokens", "val_loss_original", "val_loss_start",
                                       "val_loss_final")}
    print(json.dumps(summary, indent=1))
    print(f"model: {args.out}/model   metrics: {args.out}/metrics.json")
    return 0
