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

from bilinear_lens.runs import RunError, check_int, check_out_path, check_resume_overwrite


def load_model(path: str, flag: str = "--model") -> Tuple[Any, Any]:
    """A HookedTransformer from a model folder, and its tokenizer (``None`` if the folder has none)."""
    from bilinear_lens import load_pretrained

    p = Path(path)
    if p.is_file():
        raise RunError(f"{flag} {p} is a file, not a model folder; pass the folder that holds config.json "
                       "and model.safetensors (e.g. OUT/model of train-lm).")
    if not p.is_dir():
        raise FileNotFoundError(f"model folder {p} does not exist (train one with bilinear-lens train-lm).")
    model = load_pretrained(str(p.resolve())).eval()
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None and ((p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists()):
        from bilinear_lens.language.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(p)
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


def _train_config(args: argparse.Namespace) -> Any:
    from bilinear_lens.sae.train import SAETrainConfig

    cfg = SAETrainConfig(layer=args.layer, hook=args.hook, architecture=args.architecture, k=args.k,
                         expansion=args.expansion, training_tokens=args.tokens, context_size=args.context,
                         batch_size_tokens=args.batch_tokens, lr=args.lr, seed=args.seed,
                         n_checkpoints=args.checkpoints)
    cfg.check()  # every option but --layer's upper end, before the model is loaded
    check_int("--eval-rows", args.eval_rows, minimum=1)
    check_int("--threads", args.threads, minimum=0)
    return cfg


def _start(args: argparse.Namespace, make_config: Any) -> Tuple[Any, Any, Any]:
    """What both commands do first: every option checked, ``--out`` checked, threads set, then the model
    loaded. Returns ``(config, model, tokenizer)``."""
    check_resume_overwrite(args.resume, args.overwrite)
    cfg = make_config(args)
    check_out_path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    return cfg, model, tokenizer


def _train_sae(args: argparse.Namespace) -> int:
    from bilinear_lens.sae.train import train_sae

    cfg, model, tokenizer = _start(args, _train_config)
    cfg.check(model.cfg.n_layers)
    cfg.context_size = min(args.context, model.cfg.n_ctx)
    rows = -(-args.tokens // cfg.context_size)
    tokens = text_blocks(args.data, tokenizer, cfg.context_size, max_rows=rows + args.eval_rows)
    eval_tokens = tokens[-args.eval_rows:] if len(tokens) > 2 * args.eval_rows else tokens
    train_tokens = tokens[:-args.eval_rows] if len(tokens) > 2 * args.eval_rows else tokens
    summary = train_sae(model, train_tokens, args.out, cfg, eval_tokens=eval_tokens, model_name=str(args.model),
                        resume=args.resume, overwrite=args.overwrite, inputs=[args.model, args.data],
                        progress=not args.no_progress)
    print(f"saved {args.out}: explained variance {summary['explained_variance']:.3f}, L0 "
          f"{summary['l0']:.1f}, CE loss recovered {summary['ce_loss_recovered']:.3f}")
    return 0


def _compare_config(args: argparse.Namespace) -> Any:
    from bilinear_lens.sae.pipeline import CompareConfig, check_compare_config

    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError:
        raise RunError(f"--ks must be comma-separated integers >= 1, such as 1,2,4,8; got {args.ks!r}.") from None
    cfg = CompareConfig(layer=args.layer, ks=ks, feature=args.feature, token=args.token, n_show=args.show)
    check_compare_config(cfg)
    check_int("--rows", args.rows, minimum=1)
    check_int("--context", args.context, minimum=2)
    check_int("--threads", args.threads, minimum=0)
    return cfg


def _compare(args: argparse.Namespace) -> int:
    from sae_lens import SAE

    from bilinear_lens.runs.folder import file_digest
    from bilinear_lens.sae.identity import check_trained_on, model_identity
    from bilinear_lens.sae.pipeline import run_compare, sae_info

    cfg, model, tokenizer = _start(args, _compare_config)
    check_int("--layer", args.layer, 0, model.cfg.n_layers - 1)
    ident = model_identity(model)
    saes, digests = [], {}
    for flag, d, side in (("--sae-in", args.sae_in, "in"), ("--sae-out", args.sae_out, "out")):
        if not (Path(d) / "cfg.json").is_file() or not (Path(d) / "sae_weights.safetensors").is_file():
            raise FileNotFoundError(f"{flag} {d} is not an SAELens SAE folder (no cfg.json and "
                                    "sae_weights.safetensors).")
        check_trained_on(d, ident, flag)
        saes.append(SAE.load_from_disk(d, device="cpu"))
        digests[side] = file_digest(Path(d) / "sae_weights.safetensors")
    context = min(args.context, model.cfg.n_ctx)
    tokens = text_blocks(args.data, tokenizer, context, max_rows=args.rows)
    info = {"model": str(args.model), "data": str(args.data), **sae_info(args.sae_in, args.sae_out)}
    identity = {"model": ident["sha256"], "sae_in": digests["in"], "sae_out": digests["out"]}
    metrics = run_compare(model, saes[0], saes[1], tokens, args.out, cfg, tokenizer=tokenizer, info=info,
                          identity=identity, resume=args.resume, overwrite=args.overwrite,
                          inputs=[args.model, args.sae_in, args.sae_out, args.data])
    lr = metrics["lowrank_correlation"]
    print(f"wrote {Path(args.out) / 'index.html'}; low-rank mean r at k={lr['k'][0]}: {lr['mean'][0]:.3f} "
          f"({lr['n_features']} output features)")
    return 0


def _run_flags(p: Any, what: str) -> None:
    p.add_argument("--resume", action="store_true", help=f"continue the {what} in --out (a finished one is "
                   "verified and returned)")
    p.add_argument("--overwrite", action="store_true", help=f"replace the {what} in --out (the old one is "
                   "kept until the new one has its first checkpoint)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")


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
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--checkpoints", type=int, default=4, help="checkpoints during training (resumable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _run_flags(p, "SAE training run")
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
    _run_flags(c, "comparison")
    c.set_defaults(func=_compare)
