"""Training bilinear (or SwiGLU) TinyStories language models on a CPU.

    loss = mean_t -log softmax(model(tokens)[t])[tokens[t+1]]          (blocks of n_ctx tokens)
    AdamW(lr, betas, weight_decay on matrices only), lr: linear warm-up, then cosine to
    min_lr_ratio * lr; gradients clipped to grad_clip (global norm).

``train_lm(LMTrainConfig(...))`` trains the tokenizer (unless one is given), tokenizes the data
once into a cached tensor, packs it into blocks, trains, and writes the run folder described
in :mod:`bilinear_lens.language.checkpoint`. A run interrupted at any point resumes
(``resume=True``) from its last checkpoint and ends in the same state as an uninterrupted run:
the data order is a function of the step, and model, optimizer, scheduler and RNG are restored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Int
from tqdm.auto import tqdm

from bilinear_lens.runs import (RunError, RunFolder, check_float, check_int, check_resume_overwrite, open_run,
                                require_finite_loss, rng_state, set_rng_state)
from bilinear_lens.language import checkpoint as ckpt
from bilinear_lens.language.data import check_source, load_tokens, token_blocks
from bilinear_lens.language.model import LMShape, build_model, count_params, trainable
from bilinear_lens.language.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

DEFAULT_TOKENS = 1_200_000  # when neither max_tokens nor epochs is given

# Settings that do not change the result (a run may be resumed with other values).
NON_IDENTITY = ("out", "eval_every", "checkpoint_every", "resume", "overwrite", "progress",
                "num_threads", "stop_after_steps")


@dataclass
class LMTrainConfig:
    """Everything ``train_lm`` needs. Defaults: ~1.6 M parameters (0.5 M without embeddings),
    1.2 M tokens: about 15-20 minutes on one thread of a shared 2-core CPU. Give at most one of
    ``max_tokens`` / ``epochs`` (neither: ``DEFAULT_TOKENS``)."""

    train_data: str
    val_data: Optional[str] = None  # None: hold out the last val_fraction of the training blocks
    out: str = "runs/lm"
    mlp: str = "bilinear"  # or "swiglu"
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: Optional[int] = None  # default 4 * d_model
    n_ctx: int = 128
    vocab_size: int = 4096  # used when the tokenizer is trained here
    tokenizer: Optional[str] = None  # a tokenizer folder; None: train one on train_data
    lr: float = 5e-3  # short-run check (200k tokens): val loss 5.27 (lr 1e-3), 4.73 (3e-3), 4.61 (6e-3)
    min_lr_ratio: float = 0.1
    warmup_steps: Optional[int] = None  # default min(100, 5% of the steps)
    weight_decay: float = 0.1
    betas: Tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    batch_size: int = 16
    max_tokens: Optional[int] = None
    epochs: Optional[float] = None
    seed: int = 0
    val_fraction: float = 0.05
    eval_tokens: int = 32_768  # validation tokens for the periodic evaluation
    final_eval_tokens: Optional[int] = 262_144  # for the final val_loss (None: the whole file)
    eval_every: int = 50  # steps
    checkpoint_every: int = 100  # steps
    num_threads: Optional[int] = 1  # torch threads (None: torch's default); 1 is fastest on a busy machine
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    stop_after_steps: Optional[int] = None  # stop (with a checkpoint) after this step, e.g. to test resuming

    def identity(self) -> Dict[str, Any]:
        d = asdict(self)
        for k in NON_IDENTITY:
            d.pop(k)
        d["betas"] = list(d["betas"])
        for k in ("train_data", "val_data", "tokenizer"):
            if d[k] is not None and Path(d[k]).exists():
                d[k] = str(Path(d[k]).resolve())
        return d

    def check(self) -> None:
        """One-line :class:`RunError` naming the option (its ``train-lm`` flag) and its range."""
        check_resume_overwrite(self.resume, self.overwrite)
        from bilinear_lens.language.model import check_shape

        if self.max_tokens is not None and self.epochs is not None:
            raise RunError("give max_tokens (--tokens) or epochs (--epochs), not both.")
        for flag, value, lo in (("--d-model", self.d_model, 1), ("--layers", self.n_layers, 1),
                                ("--heads", self.n_heads, 1), ("--d-mlp", self.d_mlp, 1),
                                ("--ctx", self.n_ctx, 2), ("--vocab", self.vocab_size, 258),
                                ("--batch", self.batch_size, 1), ("--tokens", self.max_tokens, 1),
                                ("--seed", self.seed, 0), ("--eval-every", self.eval_every, 1),
                                ("--checkpoint-every", self.checkpoint_every, 1),
                                ("--threads", self.num_threads, 0), ("warmup_steps", self.warmup_steps, 0),
                                ("eval_tokens", self.eval_tokens, 1),
                                ("final_eval_tokens", self.final_eval_tokens, 1),
                                ("stop_after_steps", self.stop_after_steps, 1)):
            check_int(flag, value, minimum=lo)
        check_float("--lr", self.lr, minimum=0, inclusive=(False, True))
        check_float("--epochs", self.epochs, minimum=0, inclusive=(False, True))
        check_float("min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_float("weight_decay", self.weight_decay, minimum=0)
        check_float("grad_clip", self.grad_clip, minimum=0, inclusive=(False, True))
        check_float("val_fraction", self.val_fraction, 0, 1, inclusive=False)
        if self.mlp not in ("bilinear", "swiglu"):
            raise RunError(f"mlp={self.mlp!r}: choose 'bilinear' or 'swiglu'.")
        try:
            check_shape(LMShape(mlp=self.mlp, d_model=self.d_model, n_layers=self.n_layers,
                                n_heads=self.n_heads, d_mlp=self.d_mlp, n_ctx=self.n_ctx))
        except ValueError as e:
            raise RunError(f"--d-model / --heads: {str(e).rstrip('.')}; choose --heads dividing --d-model "
                           "with an even quotient.") from e


def batch_indices(step: int, batch_size: int, n_blocks: int, seed: int) -> Int[torch.Tensor, "batch"]:
    """Block indices of ``step``: position ``p = step * batch_size + i`` of the concatenation of
    one random permutation of the blocks per epoch (epoch ``p // n_blocks``, seeded by seed and
    epoch), so the data position is the step alone."""
    pos = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, within = pos // n_blocks, pos % n_blocks
    out = torch.empty(batch_size, dtype=torch.long)
    for e in epochs.unique().tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + e)
        perm = torch.randperm(n_blocks, generator=g)
        sel = epochs == e
        out[sel] = perm[within[sel]]
    return out


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """``(step+1)/warmup`` during warm-up, then ``min + (1-min) (1 + cos(pi t)) / 2``, t in [0, 1]."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def lm_loss(model: Any, tokens: Int[torch.Tensor, "batch pos"]) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) over every position but the last."""
    logits = model(tokens, return_type="logits")
    # targets shifted left, the last position ignored: avoids copying the sliced logits
    targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


@torch.no_grad()
def evaluate(model: Any, blocks: Int[torch.Tensor, "n pos"], batch_size: int) -> float:
    """Mean validation loss over ``blocks`` (all blocks have the same length, so this is the
    per-token mean)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(blocks), batch_size):
        chunk = blocks[i: i + batch_size]
        total += lm_loss(model, chunk).item() * len(chunk)
    model.train(was_training)
    return total / len(blocks)


def _tokenizer(cfg: LMTrainConfig, out: Path, resuming: bool):
    folder = out / "tokenizer"
    if resuming and (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder)
    if cfg.tokenizer is not None:
        tok = load_tokenizer(cfg.tokenizer)
        save_tokenizer(tok, folder)
    else:
        train_tokenizer([cfg.train_data], cfg.vocab_size, out_dir=folder)
    return load_tokenizer(folder)  # TransformerLens reloads tokenizers by their folder


def _data(cfg: LMTrainConfig, tok, out: Path) -> Tuple[torch.Tensor, torch.Tensor]:
    train = token_blocks(load_tokens(cfg.train_data, tok, out / "cache"), cfg.n_ctx)
    if cfg.val_data is not None:
        val = token_blocks(load_tokens(cfg.val_data, tok, out / "cache"), cfg.n_ctx)
    else:
        n_val = max(1, int(len(train) * cfg.val_fraction))
        if n_val >= len(train):
            raise ValueError(f"{cfg.train_data} is too small to hold out validation blocks; pass val_data.")
        train, val = train[:-n_val], train[-n_val:]
    return train, val


def _optimizer(model: Any, cfg: LMTrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in trainable(model) if p.ndim >= 2]
    no_decay = [p for n, p in trainable(model) if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), foreach=True)


def train_lm(cfg: LMTrainConfig) -> Dict[str, Any]:
    """Train (or resume) the run ``cfg`` describes; return its final metrics.

    Returns ``{"val_loss", "train_tokens", "model_dir", "steps", "n_params", "history", ...}``
    (also written to ``out/metrics.json``). ``out/model`` loads with
    ``HookedTransformer.from_pretrained`` and ``transformers.AutoModelForCausalLM``.
    """
    cfg.check()
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)  # the caller's setting


def _train(cfg: LMTrainConfig) -> Dict[str, Any]:
    out = Path(cfg.out)
    for source in (cfg.train_data, cfg.val_data):
        if source is not None:
            check_source(source)
    if cfg.tokenizer is not None:
        load_tokenizer(cfg.tokenizer)  # a clear error before anything is written
    identity = cfg.identity()
    inputs = [p for p in (cfg.train_data, cfg.val_data, cfg.tokenizer) if p is not None and Path(p).exists()]
    with open_run(out, "train-lm", identity, resume=cfg.resume, overwrite=cfg.overwrite, owned=ckpt.OWNED,
                  inputs=inputs) as run:
        if run.finished:
            return json.loads(run.file("metrics.json").read_text())  # verified by open_run
        return _train_in(cfg, run, identity)


def _train_in(cfg: LMTrainConfig, run: RunFolder, identity: Dict[str, Any]) -> Dict[str, Any]:
    out = run.path
    tok = _tokenizer(cfg, out, run.resuming)
    train, val = _data(cfg, tok, out)
    if cfg.epochs is None:
        total_steps = math.ceil((cfg.max_tokens or DEFAULT_TOKENS) / (cfg.batch_size * cfg.n_ctx))
    else:
        total_steps = max(1, round(cfg.epochs * len(train) / cfg.batch_size))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(100, max(1, total_steps // 20))
    shape = LMShape(mlp=cfg.mlp, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                    d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx, d_vocab=len(tok), seed=cfg.seed)
    model = build_model(shape, tokenizer=tok)
    model.train()
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, warmup, cfg.min_lr_ratio))
    eval_blocks = val[: max(1, cfg.eval_tokens // cfg.n_ctx)]

    state: Dict[str, Any] = {"step": 0, "history": [], "loss_sum": 0.0, "loss_n": 0, "elapsed": 0.0}
    loaded = ckpt.load_checkpoint(run, model) if run.resuming else None
    if loaded is not None:
        opt.load_state_dict(loaded["optimizer"])
        sched.load_state_dict(loaded["scheduler"])
        set_rng_state(loaded["rng"])
        state = loaded["train"]
    else:
        torch.manual_seed(cfg.seed)
    history: List[Dict[str, Any]] = state["history"]
    info = {
        "mlp": cfg.mlp, "n_params": count_params(model),
        "n_params_non_embedding": count_params(model, embeddings=False), "total_steps": total_steps,
        "tokens_per_step": cfg.batch_size * cfg.n_ctx, "train_blocks": len(train),
        "val_blocks": len(val), "vocab_size": len(tok), "config": identity,
    }

    def snapshot() -> None:
        ckpt.save_checkpoint(run, model, model.tokenizer, {
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": rng_state(), "train": state,
        })

    def write_metrics(extra: Dict[str, Any]) -> Dict[str, Any]:
        tokens = state["step"] * info["tokens_per_step"]
        metrics = {**info, "history": history, "steps": state["step"], "train_tokens": tokens,
                   "elapsed_s": state["elapsed"],
                   "tokens_per_second": tokens / state["elapsed"] if state["elapsed"] else None, **extra}
        run.write_json("metrics.json", metrics)
        return metrics

    bar = tqdm(total=total_steps, initial=state["step"], disable=not cfg.progress,
               desc=f"train-lm {cfg.mlp}", unit="step")
    t0 = time.time() - state["elapsed"]
    while state["step"] < total_steps:
        step = state["step"]
        batch = train[batch_indices(step, cfg.batch_size, len(train), cfg.seed)]
        loss = lm_loss(model, batch)
        require_finite_loss(loss.item(), step + 1, "the last checkpoint in " + str(out / "checkpoint"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable(model)], cfg.grad_clip)
        opt.step()
        sched.step()
        state["step"] = step + 1
        state["loss_sum"] += loss.item()
        state["loss_n"] += 1
        state["elapsed"] = time.time() - t0
        bar.update(1)
        done = state["step"] == total_steps
        if state["step"] % cfg.eval_every == 0 or done:
            val_loss = evaluate(model, eval_blocks, cfg.batch_size)
            train_loss = state["loss_sum"] / state["loss_n"]
            state["loss_sum"], state["loss_n"] = 0.0, 0
            history.append({"step": state["step"], "tokens": state["step"] * info["tokens_per_step"],
                            "train_loss": train_loss, "val_loss": val_loss,
                            "lr": sched.get_last_lr()[0], "elapsed_s": state["elapsed"]})
            bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}",
                            tok_s=f"{state['step'] * info['tokens_per_step'] / state['elapsed']:.0f}")
            write_metrics({"finished": False})
        stop = cfg.stop_after_steps is not None and state["step"] >= cfg.stop_after_steps
        if not done and (state["step"] % cfg.checkpoint_every == 0 or stop):
            snapshot()
        if stop and not done:
            bar.close()
            return write_metrics({"finished": False, "stopped_at": state["step"]})
    bar.close()
    snapshot()
    final_blocks = val if cfg.final_eval_tokens is None else val[: max(1, cfg.final_eval_tokens // cfg.n_ctx)]
    val_loss = evaluate(model, final_blocks, cfg.batch_size)
    ckpt.save_model(run, "model", model, model.tokenizer)
    metrics = write_metrics({"finished": True, "val_loss": val_loss,
                             "val_tokens": int(final_blocks.numel()), "model_dir": str(out / "model")})
    run.finish()
    return metrics
