"""``bilinear-lens train-lm``: train a bilinear (or SwiGLU) language model on a text file."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bilinear_lens.language.train import LMTrainConfig

D = LMTrainConfig.__dataclass_fields__


def _default(name: str) -> Any:
    return D[name].default


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-lm", help="train a bilinear (or SwiGLU) transformer language model",
        description="Train a HookedTransformer language model (RMSNorm, rotary attention, bilinear "
                    "or SwiGLU MLPs, untied embeddings) on a text file with a byte-level BPE "
                    "tokenizer. Writes OUT/model (Hugging Face Llama folder incl. tokenizer), "
                    "OUT/metrics.json and resumable checkpoints in OUT/checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, help="training text (stories separated by lines "
                   "'<|endoftext|>', blank lines or one per line) or a Hugging Face dataset name")
    p.add_argument("--val-data", default=None,
                   help="validation text (default: hold out 5%% of the training blocks)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--mlp", choices=["bilinear", "swiglu"], default="bilinear")
    p.add_argument("--d-model", type=int, default=_default("d_model"))
    p.add_argument("--layers", type=int, default=_default("n_layers"))
    p.add_argument("--heads", type=int, default=_default("n_heads"))
    p.add_argument("--d-mlp", type=int, default=None, help="MLP width (default 4 * d_model)")
    p.add_argument("--ctx", type=int, default=_default("n_ctx"), help="context length (block size)")
    p.add_argument("--vocab", type=int, default=_default("vocab_size"),
                   help="tokenizer vocabulary size (when the tokenizer is trained here)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--tokens", type=int, default=None, help="training tokens (default: 1,200,000)")
    budget.add_argument("--epochs", type=float, default=None, help="training epochs")
    p.add_argument("--lr", type=float, default=_default("lr"))
    p.add_argument("--batch", type=int, default=_default("batch_size"), help="blocks per step")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: train one on --data)")
    p.add_argument("--seed", type=int, default=_default("seed"))
    p.add_argument("--eval-every", type=int, default=_default("eval_every"), help="steps")
    p.add_argument("--checkpoint-every", type=int, default=_default("checkpoint_every"), help="steps")
    p.add_argument("--threads", type=int, default=_default("num_threads"),
                   help="torch threads (0: torch's default; 1 is fastest on a shared machine)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> LMTrainConfig:
    return LMTrainConfig(
        train_data=args.data, val_data=args.val_data, out=args.out, mlp=args.mlp,
        d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, d_mlp=args.d_mlp,
        n_ctx=args.ctx, vocab_size=args.vocab, tokenizer=args.tokenizer, lr=args.lr,
        batch_size=args.batch, max_tokens=args.tokens, epochs=args.epochs, seed=args.seed,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        num_threads=args.threads or None, resume=args.resume, overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    from bilinear_lens.language.train import train_lm

    result = train_lm(config_from_args(args))
    summary = {k: result.get(k) for k in ("mlp", "val_loss", "train_tokens", "steps", "n_params",
                                          "n_params_non_embedding", "tokens_per_second", "model_dir")}
    print(json.dumps(summary, indent=2))
    return 0
