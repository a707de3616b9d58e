"""Finetune a SwiGLU HookedTransformer into a bilinear one (or the equal-token SiLU baseline).

Per optimiser step ``s`` (``beta = beta_schedule(s)``, ``lr = peak_lr * lr_schedule(s)``)::

    loss = (1 - w) * CE(student(tokens), next tokens) + w * KL(teacher || student)

with ``w = distill`` (0: plain language-model loss; the teacher is the frozen original model),
averaged over ``grad_accum`` micro-batches, gradients clipped to ``grad_clip``, AdamW. In
``bilinear`` mode every MLP is an :class:`AnnealedGateMLP` whose ``beta`` goes 1 -> 0; at the end
the blocks are swapped for exact :class:`BilinearMLP` modules. In ``baseline`` mode the SwiGLU
blocks are trained unchanged with the same data, schedule and loss.

Parallelism and precision come from ``accelerate.Accelerator``: one process, or data parallel over
the processes of ``accelerate launch`` / ``torchrun`` (GPUs, or CPU processes over gloo); ``--fsdp``
shards every block with torch FSDP2 (:mod:`bilinear_lens.convert.sharding`); ``bf16`` autocast where supported;
gradient checkpointing per block. Checkpoints (``out/checkpoint``, every ``checkpoint_every`` steps)
hold model, optimiser, RNG states and the step; each sequence of the run is a pure function of its
index (:class:`PackedBlocks`), so ``--resume`` continues with exactly the data an uninterrupted run
would have seen.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bilinear_lens.convert.data import (PackedBlocks, check_vocab, encode_stories, load_texts,
                                        validation_batches)
from bilinear_lens.convert.config import RUN_FILES, ConvertConfig, InjectedFailure, StepCounter
from bilinear_lens.convert.checkpoint import check_finite_model, load_checkpoint, save_checkpoint
from bilinear_lens.convert.distributed import make_accelerator, on_main
from bilinear_lens.convert.fast_attention import restore_attention, use_sdpa
from bilinear_lens.convert.schedule import BetaSchedule, LRSchedule
from bilinear_lens.convert.sharding import (check_launcher_fsdp, cpu_copy, export_copy, memory_report,
                                            shard_model)
from bilinear_lens.runs import RunError, RunFolder, check_int, check_out_path, open_run, require_finite_loss
from bilinear_lens.convert.swap import (check_convertible, convert_to_bilinear,
                                        enable_gradient_checkpointing, finalize_bilinear,
                                        freeze_biases, set_beta, swap_to_annealed)

@torch.no_grad()
def validation_loss(model: Any, batches: List[tuple], device: Any = "cpu") -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of ``batches``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for toks, mask in batches:
        toks, mask = toks.to(device), mask.to(device)
        logits = model(toks).float()
        lp = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), toks[:, 1:].reshape(-1),
                             reduction="none")
        m = mask[:, 1:].reshape(-1)
        total += float(lp[m].sum())
        count += int(m.sum())
    model.train(was_training)
    return total / max(count, 1)


def lm_and_kl_loss(logits: torch.Tensor, tokens: torch.Tensor, teacher_logits: Optional[torch.Tensor],
                   distill: float) -> tuple:
    """``(loss, ce)``: ``loss = (1 - w) CE + w KL(teacher || student)`` over next-token positions."""
    logits = logits[:, :-1].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
    if teacher_logits is None or distill == 0.0:
        return ce, ce
    t = F.log_softmax(teacher_logits[:, :-1].float(), dim=-1)
    s = F.log_softmax(logits, dim=-1)
    kl = (t.exp() * (t - s)).sum(-1).mean()
    return (1 - distill) * ce + distill * kl, ce


HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model"]


def resolve_model_folder(name: str) -> str:
    """``name`` itself if it is a local folder; else a Hugging Face Hub repo id (``owner/name``,
    e.g. ``TinyLlama/TinyLlama-1.1B-Chat-v1.0``), downloaded (config, safetensors, tokenizer) into the
    Hub cache, or taken from the cache when offline; a clear ``FileNotFoundError`` otherwise."""
    if Path(name).exists():
        return name
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {name} does not exist; pass a local Llama folder "
                                "(config.json + safetensors) or a Hugging Face Hub repo id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=HUB_FILES)
    except Exception as e:  # offline and not cached, unknown or gated repo, ...
        raise FileNotFoundError(
            f"--model {name}: no such local folder, and getting it from the Hugging Face Hub failed "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Pass a local Llama folder, or a Hub "
            "repo id with the Hub reachable (HF_HUB_OFFLINE unset) or already in the Hub cache.") from e


def _load(cfg: ConvertConfig) -> tuple:
    """The SwiGLU HookedTransformer (raw weights) and tokenizer of ``cfg.model`` (a local folder or a
    Hub repo id, :func:`resolve_model_folder`)."""
    from transformers import AutoTokenizer

    from bilinear_lens.loading import load_pretrained

    folder = resolve_model_folder(cfg.model)
    if cfg.first_n_layers:
        _check_first_n_layers(folder, cfg.first_n_layers)
    kw = {"first_n_layers": cfg.first_n_layers} if cfg.first_n_layers else {}
    model = load_pretrained(folder, processing=False, **kw)
    where = cfg.tokenizer or folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
    except Exception as e:  # missing, truncated or hand-edited tokenizer files
        first = (str(e).splitlines() or [""])[0][:160]
        raise RunError(f"the tokenizer in {where} cannot be loaded ({type(e).__name__}: {first}); copy its "
                       "tokenizer files again, or pass --tokenizer DIR.") from e
    return model, tokenizer


def _check_first_n_layers(folder: str, n: int) -> None:
    import json

    try:
        layers = json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the loader names what is wrong with config.json
    if isinstance(layers, int):
        check_int("--first-n-layers", n, 1, layers)


def run_convert(cfg: ConvertConfig, model: Any = None, tokenizer: Any = None) -> Dict[str, Any]:
    """Run (or resume) one conversion; returns the metrics also written to ``out/metrics.json``.

    ``out`` follows the run-folder contract (:func:`bilinear_lens.runs.open_run`, kind
    ``conversion``), opened and locked by the main process; every process stops together on a
    refusal. Everything is checked (options, model, data) before the folder is touched."""
    cfg.check()
    acc = make_accelerator("bf16" if cfg.bf16 else "no")
    check_launcher_fsdp(acc.distributed_type)
    if cfg.fsdp and acc.num_processes == 1:
        raise ValueError("--fsdp shards the model over several processes, but this is one process; "
                         "launch with `accelerate launch --num_processes N -m bilinear_lens.cli convert "
                         "... --fsdp`, or drop --fsdp")
    on_main(acc, lambda: check_out_path(cfg.out))
    if model is None:
        model, tokenizer = _load(cfg)
    check_convertible(model)
    check_finite_model(model, cfg.model)
    check_vocab(tokenizer, model.cfg.d_vocab)
    if cfg.seq_len > model.cfg.n_ctx:
        raise ValueError(f"seq_len={cfg.seq_len} exceeds the model context n_ctx={model.cfg.n_ctx}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    texts = load_texts(cfg.data, text_field=cfg.text_field, limit=cfg.train_limit)
    if not texts:
        raise ValueError(f"the dataset {cfg.data} is empty (no stories)")
    data = PackedBlocks(encode_stories(tokenizer, texts), cfg.seq_len, seed=cfg.seed)
    per_step = cfg.batch_size * cfg.grad_accum * acc.num_processes
    if len(data) < per_step:
        raise ValueError(f"the dataset is too small: {len(data)} blocks of {cfg.seq_len} tokens, "
                         f"but one optimiser step needs {per_step} (batch_size x grad_accum x processes)")
    val_source = cfg.val_data
    if val_source is None and Path(cfg.data).is_file():
        cand = Path(cfg.data).with_name("validation.txt")
        val_source = str(cand) if cand.exists() and cand != Path(cfg.data) else None
    val = []
    if val_source:
        val_texts = load_texts(val_source, split="validation", text_field=cfg.text_field,
                               limit=cfg.val_stories)
        val = validation_batches(encode_stories(tokenizer, val_texts),
                                 min(cfg.val_max_len, model.cfg.n_ctx), pad_id=tokenizer.bos_token_id)
    inputs = [p for p in (cfg.model, cfg.data, cfg.tokenizer, val_source) if p and Path(p).exists()]
    holder: Dict[str, RunFolder] = {}

    def open_folder() -> Dict[str, Any]:
        run = holder["run"] = open_run(cfg.out, "conversion", cfg.identity(), resume=cfg.resume,
                                       overwrite=cfg.overwrite, owned=RUN_FILES, inputs=inputs)
        import json

        done = json.loads(run.file("metrics.json").read_text()) if run.finished else None
        if done is not None and bool(done.get("sharded")) != cfg.fsdp:
            run.close()
            raise ValueError(f"{run.file('checkpoint')} was written {'with' if not cfg.fsdp else 'without'} "
                             "--fsdp; resume with the same setting")
        return {"resuming": run.resuming, "finished": done}

    opened = on_main(acc, open_folder)
    run = holder.get("run")
    failed = True
    try:
        if opened["finished"] is not None:
            failed = False
            return opened["finished"]
        metrics = _convert(cfg, acc, run, Path(cfg.out), model, tokenizer, data, val, val_source,
                           per_step, opened["resuming"])
        failed = False
        return metrics
    finally:
        if run is not None:
            run.close(failed=failed)


def _convert(cfg: ConvertConfig, acc: Any, run: Optional[RunFolder], out: Path, model: Any, tokenizer: Any,
             data: PackedBlocks, val: List[tuple], val_source: Optional[str], per_step: int,
             resuming: bool) -> Dict[str, Any]:
    """The training loop of :func:`run_convert` (``run`` is the main process's run folder)."""
    total_steps = math.ceil(cfg.tokens / (per_step * cfg.seq_len))
    device = acc.device
    model.to(device)
    use_sdpa(model)  # training-only fast attention (copies keep it); restored before saving
    teacher = None
    if cfg.distill > 0:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        if cfg.bf16:  # the frozen teacher only runs under bf16 autocast: keep it in bf16 (half the bytes)
            teacher.to(torch.bfloat16)
    counter = StepCounter()
    has_ckpt = resuming and on_main(acc, lambda: run.file("checkpoint/state.json").is_file())
    if not has_ckpt:  # metrics of the untouched model and of the plain swap
        counter.extra["val_loss_original"] = validation_loss(model, val, device) if val else None
        swapped = convert_to_bilinear(copy.deepcopy(model))
        counter.extra["val_loss_swapped"] = validation_loss(swapped, val, device) if val else None
        del swapped
    freeze_biases(model)
    if cfg.mode == "bilinear":
        swap_to_annealed(model, beta=1.0)
        freeze_biases(model)
    if not has_ckpt:
        counter.extra["val_loss_start"] = (counter.extra["val_loss_swapped"] if cfg.mode == "bilinear"
                                           else counter.extra["val_loss_original"])
    template = None  # --fsdp: an unsharded CPU copy on the main process, filled for the export
    if cfg.fsdp and acc.is_main_process:
        template = cpu_copy(model)
    if cfg.grad_checkpointing:
        enable_gradient_checkpointing(model)
    if cfg.fsdp:
        shard_model(model)
        if teacher is not None:
            shard_model(teacher, inference=True)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    beta_at = BetaSchedule(total_steps, cfg.anneal_frac, cfg.beta_schedule)
    lr_at = LRSchedule(total_steps, cfg.warmup, cfg.lr_decay, cfg.min_lr_ratio)
    if cfg.fsdp:
        raw = model
    else:
        model, opt = acc.prepare(model, opt)
        raw = acc.unwrap_model(model)
    if has_ckpt:
        load_checkpoint(acc, out, raw, model, opt, counter, cfg.fsdp)
    eval_every = cfg.eval_every or max(1, total_steps // 4)

    bar = tqdm(total=total_steps, initial=counter.step, disable=not (cfg.progress and acc.is_main_process),
               desc=f"convert[{cfg.mode}]", unit="step")
    model.train()
    t0, start_step = time.time(), counter.step
    while counter.step < total_steps:
        step = counter.step
        beta = beta_at(step) if cfg.mode == "bilinear" else 1.0
        set_beta(raw, beta)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_at(step)
        sums = _accumulate(cfg, acc, model, teacher, data, step)
        if acc.num_processes > 1:
            sums = acc.reduce(sums, "mean")
        ce_sum = float(sums[0])
        require_finite_loss(float(sums[1]), step + 1, f"the last checkpoint in {out / 'checkpoint'}")
        if cfg.grad_clip > 0:
            acc.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        counter.step += 1
        rec = {"step": counter.step, "tokens": counter.step * per_step * cfg.seq_len, "beta": beta,
               "train_ce": ce_sum}
        if val and (counter.step % eval_every == 0) and counter.step < total_steps:
            rec["val_loss"] = validation_loss(raw, val, device)
        counter.history.append(rec)
        bar.set_postfix(loss=f"{ce_sum:.3f}", beta=f"{beta:.3f}",
                        **({"val": f"{rec['val_loss']:.3f}"} if "val_loss" in rec else {}))
        bar.update(1)
        if counter.step % cfg.checkpoint_every == 0 or counter.step == total_steps:
            save_checkpoint(acc, run, raw, model, opt, counter, cfg.fsdp)
    bar.close()
    elapsed = time.time() - t0

    memory = memory_report(model, opt, teacher)  # before the export swaps modules
    session = {"seconds_this_session": round(elapsed, 1), "steps_this_session": total_steps - start_step}
    return _finish(cfg, acc, run, model, raw, template, tokenizer, data, val, val_source, counter,
                   total_steps * per_step * cfg.seq_len, total_steps, memory, session)


def _accumulate(cfg: ConvertConfig, acc: Any, model: Any, teacher: Any, data: PackedBlocks,
                step: int) -> torch.Tensor:
    """Forward and backward of the ``grad_accum`` micro-batches of ``step`` (this process's share);
    ``[mean CE, mean loss]`` over them (not yet averaged over processes)."""
    sums = torch.zeros(2, device=acc.device)
    for micro in range(cfg.grad_accum):
        first = (step * cfg.grad_accum + micro) * cfg.batch_size * acc.num_processes
        toks = data.sequences(first + acc.process_index * cfg.batch_size, cfg.batch_size).to(acc.device)
        sync = micro == cfg.grad_accum - 1
        ctx = acc.no_sync(model) if not sync else contextlib.nullcontext()
        with ctx, acc.autocast():
            t_logits = None
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(toks)
            loss, ce = lm_and_kl_loss(model(toks), toks, t_logits, cfg.distill)
            if cfg.fail_at_step is not None and step == cfg.fail_at_step:
                raise InjectedFailure(f"injected failure in the middle of step {step}")
            acc.backward(loss / cfg.grad_accum)
        sums += torch.stack([ce.detach().float(), loss.detach().float()]) / cfg.grad_accum
    return sums


def _finish(cfg: ConvertConfig, acc: Any, run: Optional[RunFolder], model: Any, raw: Any, template: Any,
            tokenizer: Any, data: PackedBlocks, val: List[tuple], val_source: Optional[str], counter: Any,
            tokens: int, total_steps: int, memory: Dict[str, float], session: Dict[str, Any]) -> Dict[str, Any]:
    """Final validation, the export (``model/``, ``metrics.json``) and the finished run (collective)."""
    device = acc.device
    set_beta(raw, 0.0 if cfg.mode == "bilinear" else 1.0)
    # at beta = 0 the annealed block computes exactly BilinearMLP's output (tests/test_convert_swap.py)
    final = validation_loss(raw, val, device) if val else None
    export = export_copy(template, model) if cfg.fsdp else raw  # --fsdp: gathered on the main process
    if export is not None and cfg.mode == "bilinear":
        set_beta(export, 0.0)  # (the --fsdp template was copied at beta = 1)
        finalize_bilinear(export)
    metrics = {
        "mode": cfg.mode, "tokens": tokens, "steps": total_steps,
        "val_loss_original": counter.extra.get("val_loss_original"),
        "val_loss_swapped": counter.extra.get("val_loss_swapped"),
        "val_loss_start": counter.extra.get("val_loss_start"),
        "val_loss_final": final,
        "val_stories": cfg.val_stories if val else 0, "val_source": val_source,
        "train_tokens_available": data.n_tokens, "processes": acc.num_processes,
        "sharded": cfg.fsdp, "memory_bytes_per_process": memory,
        **session, "history": counter.history, "config": cfg.identity(),
    }
    if acc.is_main_process:
        from bilinear_lens.language.checkpoint import save_model

        restore_attention(export)
        save_model(run, "model", export, tokenizer)
        run.write_json("metrics.json", metrics)
        run.finish()
    acc.wait_for_everyone()
    return metrics
