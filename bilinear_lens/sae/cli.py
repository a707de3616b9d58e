"""``bilinear-lens train-sae`` and ``bilinear-lens compare``.

    bilinear-lens train-sae --model DIR --layer L --hook in|out --data FILE --out DIR \\
        [--architecture topk] [--k 30] [--expansion 4] [--training-tokens N]
    bilinear-lens compare --model DIR --layer L --sae-in DIR --sae-out DIR --data FILE --out DIR

Every flag is a field of the command's settings (:class:`TrainSAECommand`, :class:`CompareCommand`, which nest
:class:`~bilinear_lens.sae.config.SAETrainConfig` and :class:`~bilinear_lens.sae.config.CompareConfig`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Tuple

from bilinear_lens.config import add_arguments, from_args
from bilinear_lens.runs import check_out_path
from bilinear_lens.sae.config import CompareCommand, TrainSAECommand

__all__ = ["add_commands"]


def _command(cls: type, body: Callable[[Any], int]) -> Callable[[argparse.Namespace], int]:
    """The command's function: its settings from the flags, every option checked, then ``body(settings)``
    under ``--threads``."""
    def run(args: argparse.Namespace) -> int:
        cfg = from_args(cls, args).check()
        with cfg.run.torch_threads():
            return body(cfg)

    return run


def _start(cfg: Any) -> Tuple[Any, Any]:
    """What both commands do first (after the options): ``--out`` checked, then the model loaded.
    Returns ``(model, tokenizer)``."""
    from bilinear_lens.loading import load_model_and_tokenizer

    check_out_path(cfg.run.out)
    return load_model_and_tokenizer(cfg.model)


def _train_sae(cfg: TrainSAECommand) -> int:
    from bilinear_lens.sae.train import train_sae
    from bilinear_lens.text.tokens import text_blocks

    model, tokenizer = _start(cfg)
    sae = cfg.sae
    sae.check_layer(model.cfg.n_layers)
    sae = sae.replace(context_size=min(sae.context_size, model.cfg.n_ctx))
    rows = -(-sae.training_tokens // sae.context_size)
    tokens = text_blocks(cfg.data, tokenizer, sae.context_size, max_rows=rows + cfg.eval_rows)
    held = len(tokens) > 2 * cfg.eval_rows
    eval_tokens = tokens[-cfg.eval_rows:] if held else tokens
    train_tokens = tokens[:-cfg.eval_rows] if held else tokens
    summary = train_sae(model, train_tokens, cfg.run.out, sae, eval_tokens=eval_tokens, model_name=str(cfg.model),
                        resume=cfg.run.resume, overwrite=cfg.run.overwrite, inputs=[cfg.model, cfg.data],
                        progress=cfg.run.progress)
    print(f"saved {cfg.run.out}: explained variance {summary['explained_variance']:.3f}, L0 "
          f"{summary['l0']:.1f}, CE loss recovered {summary['ce_loss_recovered']:.3f}")
    return 0


def _compare(cfg: CompareCommand) -> int:
    from sae_lens import SAE

    from bilinear_lens.runs import check_int
    from bilinear_lens.runs.folder import file_digest
    from bilinear_lens.sae.identity import check_trained_on, model_identity
    from bilinear_lens.sae.pipeline import run_compare, sae_info
    from bilinear_lens.text.tokens import text_blocks

    model, tokenizer = _start(cfg)
    check_int("--layer", cfg.compare.layer, 0, model.cfg.n_layers - 1)
    ident = model_identity(model)
    saes, digests = [], {}
    for flag, d, side in (("--sae-in", cfg.sae_in, "in"), ("--sae-out", cfg.sae_out, "out")):
        if not (Path(d) / "cfg.json").is_file() or not (Path(d) / "sae_weights.safetensors").is_file():
            raise FileNotFoundError(f"{flag} {d} is not an SAELens SAE folder (no cfg.json and "
                                    "sae_weights.safetensors).")
        check_trained_on(d, ident, flag)
        saes.append(SAE.load_from_disk(d, device="cpu"))
        digests[side] = file_digest(Path(d) / "sae_weights.safetensors")
    tokens = text_blocks(cfg.data, tokenizer, min(cfg.context, model.cfg.n_ctx), max_rows=cfg.rows)
    info = {"model": str(cfg.model), "data": str(cfg.data), **sae_info(cfg.sae_in, cfg.sae_out)}
    identity = {"model": ident["sha256"], "sae_in": digests["in"], "sae_out": digests["out"]}
    metrics = run_compare(model, saes[0], saes[1], tokens, cfg.run.out, cfg.compare, tokenizer=tokenizer, info=info,
                          identity=identity, resume=cfg.run.resume, overwrite=cfg.run.overwrite,
                          inputs=[cfg.model, cfg.sae_in, cfg.sae_out, cfg.data])
    lr = metrics["lowrank_correlation"]
    print(f"wrote {Path(cfg.run.out) / 'index.html'}; low-rank mean r at k={lr['k'][0]}: {lr['mean'][0]:.3f} "
          f"({lr['n_features']} output features)")
    return 0


TRAIN_SAE = _command(TrainSAECommand, _train_sae)
COMPARE = _command(CompareCommand, _compare)


def add_commands(sub: Any) -> None:
    """Add ``train-sae`` and ``compare`` to the ``bilinear-lens`` subcommands."""
    p = sub.add_parser("train-sae", help="train a SAELens SAE on a bilinear layer's MLP input or output",
                       description="Train a SAELens SAE (offline) on blocks.L.mlp.hook_in (--hook in) or "
                                   "blocks.L.hook_mlp_out (--hook out); writes SAELens' format + evals.json.")
    add_arguments(p, TrainSAECommand)
    p.set_defaults(func=TRAIN_SAE)
    c = sub.add_parser("compare", help="eigenvectors vs SAE features: metrics.json + index.html",
                       description="Compare the weight-based decomposition of layer L with SAEs on its MLP "
                                   "input and output; writes metrics.json, index.html and figures.")
    add_arguments(c, CompareCommand)
    c.set_defaults(func=COMPARE)
