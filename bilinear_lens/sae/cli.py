"""``bilinear-lens train-sae`` and ``bilinear-lens compare``.

    bilinear-lens train-sae --model DIR --layer L --hook in|out --data FILE --out DIR \
        [--architecture topk] [--k 30] [--expansion 4] [--tokens N]
    bilinear-lens compare --model DIR --layer L --sae-in DIR --sae-out DIR --data FILE --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional, Tuple

import torch


def load_model(path: str) -> Tuple[Any, Any]:
    """A HookedTransformer from a model folder, and its tokenizer (``None`` if the folder has none)."""
    from bilinear_lens import load_pretrained

    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model folder {p} does not exist (train one with bilinear-lens train-lm).")
    model = load_pretrained(str(p.resolve())).eval()
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None and ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(p))
    return model, tokenizer


def text_blocks(data: str, tokenizer: Any, context: int, max_rows: Optional[int] = None,
                skip_rows: int = 0) -> torch.Tensor:
    """Rows ``[n, context]`` of the token stream ``[BOS] story [BOS] story ...`` of a text file."""
    from bilinear_lens.language.data import read_stories, token_blocks, tokenize_stories

    if tokenizer is None:
        raise ValueError("the model folder has no tokenizer, so text cannot be tokenised; save the model "
                         "with its tokenizer (bilinear-lens train-lm does).")
    stories = read_stories(data)
    if max_rows is not None:  # tokenise only about what is needed: <= 8 characters per token
        budget, n = (skip_rows + max_rows) * context * 8, 0
        for n, story in enumerate(stories, 1):
            budget -= len(story) + 1
            if budget <= 0:
                break
        stories = stories[:n]
    blocks = token_blocks(tokenize_stories(stories, tokenizer), context)
    blocks = blocks[skip_rows:]
    if max_rows is not None:
        blocks = blocks[:max_rows]
    if len(blocks) == 0:
        raise ValueError(f"{data} gives no block of {context} tokens after skipping {skip_rows}; use more text.")
    return blocks


def _train_sae(args: argparse.Namespace) -> int:
    from bilinear_lens.sae.train import SAETrainConfig, train_sae

    model, tokenizer = load_model(args.model)
    context = min(args.context, model.cfg.n_ctx)
    rows = -(-args.tokens // context)
    tokens = text_blocks(args.data, tokenizer, context, max_rows=rows + args.eval_rows)
    eval_tokens = tokens[-args.eval_rows:] if len(tokens) > 2 * args.eval_rows else tokens
    train_tokens = tokens[:-args.eval_rows] if len(tokens) > 2 * args.eval_rows else tokens
    cfg = SAETrainConfig(layer=args.layer, hook=args.hook, architecture=args.architecture, k=args.k,
                         expansion=args.expansion, training_tokens=args.tokens, context_size=context,
                         batch_size_tokens=args.batch_tokens, lr=args.lr)
    summary = train_sae(model, train_tokens, args.out, cfg, eval_tokens=eval_tokens, model_name=str(args.model))
    print(f"saved {args.out}: explained variance {summary['explained_variance']:.3f}, L0 "
          f"{summary['l0']:.1f}, CE loss recovered {summary['ce_loss_recovered']:.3f}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from sae_lens import SAE

    from bilinear_lens.sae.pipeline import CompareConfig, run_compare, sae_info

    model, tokenizer = load_model(args.model)
    saes = []
    for flag, d in (("--sae-in", args.sae_in), ("--sae-out", args.sae_out)):
        if not (Path(d) / "cfg.json").exists():
            raise FileNotFoundError(f"{flag} {d} is not an SAELens SAE folder (no cfg.json).")
        saes.append(SAE.load_from_disk(d, device="cpu"))
    context = min(args.context, model.cfg.n_ctx)
    tokens = text_blocks(args.data, tokenizer, context, max_rows=args.rows)
    ks = tuple(int(k) for k in args.ks.split(","))
    cfg = CompareConfig(layer=args.layer, ks=ks, feature=args.feature, token=args.token, n_show=args.show)
    info = {"model": str(args.model), "data": str(args.data), **sae_info(args.sae_in, args.sae_out)}
    metrics = run_compare(model, saes[0], saes[1], tokens, args.out, cfg, tokenizer=tokenizer, info=info)
    lr = metrics["lowrank_correlation"]
    print(f"wrote {Path(args.out) / 'index.html'}; low-rank mean r at k={lr['k'][0]}: {lr['mean'][0]:.3f} "
          f"({lr['n_features']} output features)")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``train-sae`` and ``compare`` to the ``bilinear-lens`` subcommands."""
    from bilinear_lens.sae.train import training_architectures

    p = sub.add_parser("train-sae", help="train a SAELens SAE on a bilinear layer's MLP input or output",
                       description="Train a SAELens SAE (offline) on blocks.L.mlp.hook_in (--hook in) or "
                                   "blocks.L.hook_mlp_out (--hook out); writes SAELens' format + evals.json.")
    p.add_argument("--model", required=True, help="model folder (HF Llama, e.g. from train-lm)")
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--hook", choices=("in", "out"), required=True)
    p.add_argument("--data", required=True, help="text file (stories separated by <|endoftext|> lines)")
    p.add_argument("--out", required=True, help="output folder (SAE.load_from_disk loads it)")
    p.add_argument("--architecture", default="topk", choices=training_architectures())
    p.add_argument("--k", type=int, default=30, help="active features per token (TopK-style SAEs)")
    p.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_model")
    p.add_argument("--tokens", type=int, default=2_000_000, help="training tokens")
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--eval-rows", type=int, default=64, help="rows held out for SAELens' evals")
    p.set_defaults(func=_train_sae)

    c = sub.add_parser("compare", help="eigenvectors vs SAE features: metrics.json + index.html",
                       description="Compare the weight-based decomposition of layer L with SAEs on its MLP "
                                   "input and output; writes metrics.json, index.html and figures.")
    c.add_argument("--model", required=True)
    c.add_argument("--layer", type=int, required=True)
    c.add_argument("--sae-in", required=True, help="SAE on blocks.L.mlp.hook_in")
    c.add_argument("--sae-out", required=True, help="SAE on blocks.L.hook_mlp_out")
    c.add_argument("--data", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--rows", type=int, default=128, help="rows of --context tokens to analyse")
    c.add_argument("--context", type=int, default=128)
    c.add_argument("--ks", default="1,2,4,8,16,32,64", help="comma-separated k for the low-rank curve")
    c.add_argument("--feature", type=int, default=None, help="output feature shown side by side")
    c.add_argument("--token", default=None, help="also decompose this token's output direction")
    c.add_argument("--show", type=int, default=4, help="output features whose interaction matrices are shown")
    c.set_defaults(func=_compare)
