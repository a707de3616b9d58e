"""``train-lm``: bilinear (or SwiGLU) language models from scratch, on the shared training loop.

    loss = mean_t -log softmax(model(tokens)[t])[tokens[t+1]]          (blocks of n_ctx tokens)
    AdamW(lr, betas (0.9, 0.95), weight_decay on matrices only); lr: linear warm-up (default
    min(100, 5% of the steps)), then cosine to min_lr_ratio * lr; gradients clipped to grad_clip.

``train_lm(LMTrainConfig(...))`` trains the tokenizer (unless one is given), tokenizes the data once
into a cached stream, packs it into blocks and trains with :func:`bilinear_lens.training.train`
(one process, ``torchrun``/``accelerate launch`` data parallel, or ``--fsdp``). The run folder
(:mod:`bilinear_lens.runs`, kind ``train-lm``)::

    OUT/run.json         kind, format version and the settings that define the run (LMTrainConfig.identity)
    OUT/tokenizer/       Hugging Face tokenizer folder
    OUT/cache/           token streams as safetensors (a resumed run skips tokenisation)
    OUT/checkpoint/      state.safetensors + state.json (:mod:`bilinear_lens.training.checkpoint`)
    OUT/model/           the final model: a Hugging Face Llama folder with its tokenizer
    OUT/metrics.json     validation-loss history and final numbers (rewritten at every validation)

A run interrupted at any point resumes (``--resume``) from its last checkpoint and ends in the same
state as an uninterrupted run. No file in the folder is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from bilinear_lens.language.config import DEFAULT_TOKENS, LMTrainConfig
from bilinear_lens.language.model import build_model, count_params
from bilinear_lens.language.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from bilinear_lens.runs import RunError, check_out_path
from bilinear_lens.text.batches import TokenBlocks, block_batches
from bilinear_lens.text.sources import check_source
from bilinear_lens.text.tokens import blocks_of, load_tokens
from bilinear_lens.training.checkpoint import Counter, export_model
from bilinear_lens.training.loop import Job, steps_for_tokens, train
from bilinear_lens.training.parallel import Processes
from bilinear_lens.training.schedule import resolved_warmup

KIND, VERSION = "train-lm", 2  # version 2: the shared training loop's checkpoint and settings
OWNED = ("run.json", "metrics.json", "model", "checkpoint", "tokenizer", "cache")

__all__ = ["DEFAULT_TOKENS", "LMTrainConfig", "train_lm"]


def _tokenizer(cfg: LMTrainConfig, out: Path, resuming: bool) -> Any:
    folder = out / "tokenizer"
    if resuming and (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    if cfg.tokenizer is not None:
        save_tokenizer(load_tokenizer(cfg.tokenizer), folder)
    else:
        train_tokenizer([cfg.data], cfg.vocab_size, out_dir=folder)
    return load_tokenizer(folder)  # TransformerLens reloads tokenizers by their folder


def _materials(cfg: LMTrainConfig, out: Path, resuming: bool, procs: Processes) -> Tuple[Any, torch.Tensor,
                                                                                         torch.Tensor]:
    """Tokenizer, training blocks, validation blocks (made by the main process, read by the others)."""
    def make() -> Tuple[Any, torch.Tensor, Optional[torch.Tensor]]:
        tok = _tokenizer(cfg, out, resuming) if procs.is_main else load_tokenizer(out / "tokenizer")
        blocks = blocks_of(load_tokens(cfg.data, tok, out / "cache"), cfg.shape.n_ctx)
        val = None if cfg.val_data is None else blocks_of(load_tokens(cfg.val_data, tok, out / "cache"),
                                                          cfg.shape.n_ctx)
        return tok, blocks, val

    if procs.is_main:
        tok, train_blocks, val = make()
    procs.wait()  # the others read the tokenizer and token cache the main process wrote
    if not procs.is_main:
        tok, train_blocks, val = make()
    if val is None:
        n_val = max(1, int(len(train_blocks) * cfg.val_fraction))
        if n_val >= len(train_blocks):
            raise RunError(f"{cfg.data} is too small to hold out validation blocks; pass --val-data.")
        train_blocks, val = train_blocks[:-n_val], train_blocks[-n_val:]
    return tok, train_blocks, val


def train_lm(cfg: LMTrainConfig) -> Dict[str, Any]:
    """Train (or resume) the run ``cfg`` describes; return its final metrics.

    Returns ``{"val_loss", "train_tokens", "model_dir", "steps", "n_params", "history", ...}`` (also written
    to ``out/metrics.json``). ``out/model`` loads with ``HookedTransformer.from_pretrained`` and
    ``transformers.AutoModelForCausalLM``.
    """
    cfg.check()
    for source in (cfg.data, cfg.val_data):
        if source is not None:
            check_source(source)
    if cfg.tokenizer is not None:
        load_tokenizer(cfg.tokenizer)  # a clear error before anything is written
    with cfg.run.torch_threads():
        procs = Processes(fsdp=cfg.loop.fsdp, bf16=cfg.loop.bf16)
        procs.on_main(lambda: check_out_path(cfg.run.out))
        inputs = [p for p in (cfg.data, cfg.val_data, cfg.tokenizer) if p is not None and Path(p).exists()]
        with procs.open_run(cfg.run.out, KIND, cfg.identity(), resume=cfg.run.resume, overwrite=cfg.run.overwrite,
                            owned=OWNED, inputs=inputs, version=VERSION) as shared:
            if shared.finished is not None:
                return shared.finished
            return _train(cfg, shared, procs)


def _train(cfg: LMTrainConfig, shared: Any, procs: Processes) -> Dict[str, Any]:
    out = Path(cfg.run.out)
    tok, train_blocks, val = _materials(cfg, out, shared.resuming, procs)
    per_step = cfg.loop.batch_size * cfg.loop.grad_accum * procs.n
    n_ctx = cfg.shape.n_ctx
    if cfg.epochs is None:
        total = steps_for_tokens(cfg.tokens or DEFAULT_TOKENS, per_step, n_ctx)
    else:
        total = max(1, round(cfg.epochs * len(train_blocks) / per_step))
    optim = cfg.optim.replace(warmup=resolved_warmup(cfg.optim.warmup, total))
    model = build_model(cfg.shape.replace(d_vocab=len(tok), seed=cfg.seed), tokenizer=tok)
    info = {"mlp": cfg.shape.mlp, "n_params": count_params(model),
            "n_params_non_embedding": count_params(model, embeddings=False), "total_steps": total,
            "tokens_per_step": per_step * n_ctx, "train_blocks": len(train_blocks), "val_blocks": len(val),
            "vocab_size": len(tok), "warmup": optim.warmup, "processes": procs.n, "config": cfg.identity()}
    final_blocks = val if cfg.final_eval_tokens is None else val[: max(1, cfg.final_eval_tokens // n_ctx)]

    def metrics(counter: Counter, **extra: Any) -> Dict[str, Any]:
        tokens = counter.step * info["tokens_per_step"]
        seconds = counter.extra.get("train_seconds", 0.0)
        return {**info, "history": counter.history, "steps": counter.step, "train_tokens": tokens,
                "elapsed_s": seconds, "tokens_per_second": tokens / seconds if seconds else None, **extra}

    job = Job(model=model, data=TokenBlocks(train_blocks, seed=cfg.seed), total_steps=total,
              val=block_batches(val[: max(1, cfg.eval_tokens // n_ctx)], cfg.loop.batch_size),
              final_val=block_batches(final_blocks, cfg.loop.batch_size), seed=cfg.seed,
              desc=f"train-lm {cfg.shape.mlp}", progress=cfg.run.progress,
              on_eval=lambda c: shared.run.write_json("metrics.json", metrics(c, finished=False)))
    trained = train(out, shared.run, job, optim, cfg.loop, procs, Counter())
    if trained.counter.step < total:  # stopped early (stop_after_steps)
        result = metrics(trained.counter, finished=False, stopped_at=trained.counter.step)
        if procs.is_main:
            shared.run.write_json("metrics.json", result)
        return result
    result = metrics(trained.counter, finished=True, val_loss=trained.val_loss,
                     val_tokens=sum(int(b.numel()) for b, _ in job.final_val or []),
                     model_dir=str(out / "model"), memory_bytes_per_process=trained.memory)
    if procs.is_main:
        export_model(shared.run, "model", trained.model, trained.model.tokenizer)  # TransformerLens adds BOS
        shared.run.write_json("metrics.json", result)
        shared.run.finish()
    procs.wait()
    return result
