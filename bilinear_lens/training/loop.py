"""The language-model training loop: ``train-lm`` from scratch and ``convert``'s finetuning.

Per optimiser step ``s`` of ``T`` (``lr = optim.lr * lr_factor(s)``, :mod:`.schedule`)::

    job.before_step(model, s)                         (the converter sets its gate beta here)
    for each of grad_accum micro-batches:             (this process's slice of step s's sequences)
        loss = (1 - w) CE + w KL(teacher || student)  (w = job.distill, :mod:`.losses`)
        backward(loss / grad_accum)                   (gradients synced on the last micro-batch)
    clip the global gradient norm to optim.grad_clip (0: no clipping); AdamW step

Step ``s`` reads sequences ``[s, s + 1) * batch_size * grad_accum * processes`` of
:class:`~bilinear_lens.text.TokenBlocks`, so the data is a function of the step. Every
``checkpoint_every`` steps (and at the end) the model, AdamW, RNG states and :class:`Counter` are saved
(:mod:`.checkpoint`; no Python objects); a resumed run continues exactly. The validation loss is
measured every ``eval_every`` steps and at the end. One process, data parallel and FSDP are the same
loop (:class:`~bilinear_lens.training.parallel.Processes`); ``bf16`` autocasts, ``grad_checkpointing``
recomputes block activations, and attention runs through a fused kernel while training
(:mod:`.speedups`; restored before the model is returned).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from bilinear_lens.runs import InjectedFailure, RunFolder, require_finite_loss
from bilinear_lens.text.batches import Batch, TokenBlocks
from bilinear_lens.training.checkpoint import Counter, load_checkpoint, save_checkpoint
from bilinear_lens.training.losses import lm_loss, validation_loss
from bilinear_lens.training.optim import adamw
from bilinear_lens.training.parallel import Processes, quiet_moves
from bilinear_lens.training.progress import progress_bar
from bilinear_lens.training.config import LoopConfig, OptimConfig
from bilinear_lens.training.schedule import LRSchedule, resolved_warmup
from bilinear_lens.training.speedups import enable_gradient_checkpointing, restore_attention, use_sdpa

__all__ = ["Job", "Trained", "steps_for_tokens", "to_device", "train"]


@dataclass
class Job:
    """What one run trains, made by the application (``train-lm``, ``convert``)."""

    model: nn.Module  # the student (biases frozen); trained in place
    data: TokenBlocks
    total_steps: int
    val: List[Batch] = field(default_factory=list)  # periodic validation
    final_val: Optional[List[Batch]] = None  # the final validation (None: val)
    teacher: Optional[nn.Module] = None  # frozen, for distillation
    distill: float = 0.0
    before_step: Optional[Callable[[nn.Module, int], Dict[str, float]]] = None  # returns fields of the record
    before_final: Optional[Callable[[nn.Module], None]] = None  # e.g. the gate at its final value
    on_eval: Optional[Callable[[Counter], None]] = None  # main process, after each periodic validation
    seed: int = 0
    desc: str = "train"
    progress: bool = True


@dataclass
class Trained:
    """The loop's result: the model to save (main process; ``None`` elsewhere) and the record."""

    model: Optional[nn.Module]
    counter: Counter
    val_loss: Optional[float]
    tokens: int
    memory: Dict[str, float]
    train_seconds: float  # every session of the run
    seconds_this_session: float
    steps_this_session: int


def steps_for_tokens(tokens: int, sequences_per_step: int, n_ctx: int) -> int:
    """Optimiser steps for ``tokens`` training tokens (rounded up to whole steps)."""
    return max(1, math.ceil(tokens / (sequences_per_step * n_ctx)))


def to_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module.to(device)`` unless it is there already (HookedTransformer prints each move)."""
    if any(p.device != torch.device(device) for p in module.parameters()):
        with quiet_moves():
            module.to(device)
    return module


def _micro_steps(job: Job, loop: LoopConfig, procs: Processes, model: nn.Module, step: int) -> torch.Tensor:
    """Forward and backward of the ``grad_accum`` micro-batches of ``step`` (this process's share);
    ``[mean CE, mean loss]`` over them (not yet averaged over processes)."""
    sums = torch.zeros(2, device=procs.device)
    for micro in range(loop.grad_accum):
        first = (step * loop.grad_accum + micro) * loop.batch_size * procs.n
        toks = job.data.sequences(first + procs.rank * loop.batch_size, loop.batch_size).to(procs.device)
        with procs.micro_batch(model, last=micro == loop.grad_accum - 1):
            t_logits = None
            if job.teacher is not None and job.distill > 0:
                with torch.no_grad():
                    t_logits = job.teacher(toks)
            loss, ce = lm_loss(model(toks), toks, t_logits, job.distill)
            if loop.fail_at_step is not None and step == loop.fail_at_step:
                raise InjectedFailure(f"injected failure in the middle of step {step}")
            procs.backward(loss / loop.grad_accum)
        sums += torch.stack([ce.detach().float(), loss.detach().float()]) / loop.grad_accum
    return sums


def _prepare(job: Job, optim: OptimConfig, loop: LoopConfig, procs: Processes) -> tuple:
    """``(model, raw, opt, template)``: the model on the device with its speed-ups, sharded or wrapped, the
    unwrapped module, its optimiser, and (FSDP, main process) the CPU copy the export fills."""
    for module in (job.model, job.teacher):
        if module is not None:
            to_device(module, procs.device)
            use_sdpa(module)
    template = procs.template(job.model)
    if loop.grad_checkpointing:
        enable_gradient_checkpointing(job.model)
    model, raw, opt = procs.setup(job.model, job.teacher, lambda m: adamw(m.parameters(), optim.lr,
                                                                          optim.weight_decay, optim.betas))
    return model, raw, opt, template


def train(folder: Path, run: Optional[RunFolder], job: Job, optim: OptimConfig, loop: LoopConfig,
          procs: Processes, counter: Counter) -> Trained:
    """Train ``job`` (module docstring) in the run folder ``folder``, resuming from its checkpoint when there
    is one. Collective: every process calls it; ``run`` is the main process's :class:`RunFolder` (``None``
    elsewhere), which writes the checkpoints."""
    from bilinear_lens.training.sharding import memory_report

    session = time.time()
    model, raw, opt, template = _prepare(job, optim, loop, procs)
    if not load_checkpoint(procs, folder, raw, model, opt, counter):
        torch.manual_seed(job.seed)
    lr_at = LRSchedule(job.total_steps, resolved_warmup(optim.warmup, job.total_steps), optim.lr_decay,
                       optim.min_lr_ratio)
    eval_every = loop.eval_every or max(1, job.total_steps // 4)
    per_step = loop.batch_size * loop.grad_accum * procs.n
    params = [p for p in model.parameters() if p.requires_grad]
    bar = progress_bar(job.total_steps, initial=counter.step, desc=job.desc, enabled=job.progress and procs.is_main)
    model.train()
    t0, start = time.time(), counter.step
    while counter.step < job.total_steps:
        step = counter.step
        rec: Dict[str, Any] = {"step": step + 1, "tokens": (step + 1) * per_step * job.data.n_ctx}
        if job.before_step is not None:
            rec.update(job.before_step(raw, step))
        rec["lr"] = optim.lr * lr_at(step)
        for group in opt.param_groups:
            group["lr"] = rec["lr"]
        sums = procs.mean(_micro_steps(job, loop, procs, model, step))
        require_finite_loss(float(sums[1]), step + 1, f"the last checkpoint in {folder / 'checkpoint'}")
        if optim.grad_clip > 0:
            procs.clip(params, optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        counter.step += 1
        rec["train_ce"] = float(sums[0])
        if job.distill > 0:
            rec["train_loss"] = float(sums[1])
        evaluate = counter.step % eval_every == 0 and counter.step < job.total_steps and job.val
        if evaluate:
            rec["val_loss"] = validation_loss(raw, job.val, procs.device)
        counter.extra["train_seconds"] = counter.extra.get("train_seconds", 0.0) + (time.time() - t0)
        t0 = time.time()
        counter.history.append(rec)
        bar.set_postfix(loss=f"{rec['train_ce']:.3f}", **({"val": f"{rec['val_loss']:.3f}"} if evaluate else {}))
        bar.update(1)
        stop = loop.stop_after_steps is not None and counter.step >= loop.stop_after_steps
        if counter.step % loop.checkpoint_every == 0 or counter.step == job.total_steps or stop:
            save_checkpoint(procs, run, raw, model, opt, counter)
        if evaluate and job.on_eval is not None and procs.is_main:
            job.on_eval(counter)
        if stop and counter.step < job.total_steps:
            break
    bar.close()
    memory = memory_report(model, opt, job.teacher)  # before the export swaps modules
    val_loss = None
    if counter.step == job.total_steps:
        if job.before_final is not None:
            job.before_final(raw)
        final = job.final_val if job.final_val is not None else job.val
        val_loss = validation_loss(raw, final, procs.device) if final else None
    trained = procs.export(raw, template) if counter.step == job.total_steps else None
    if trained is not None:
        restore_attention(trained)
    return Trained(trained, counter, val_loss, counter.step * per_step * job.data.n_ctx, memory,
                   round(counter.extra.get("train_seconds", 0.0), 1), round(time.time() - session, 1),
                   counter.step - start)
