"""Finetune a SwiGLU HookedTransformer into a bilinear one (or the equal-token SiLU baseline).

Per optimiser step ``s`` of the shared loop (:mod:`bilinear_lens.training.loop`), with
``beta = BetaSchedule(s)`` (1 -> 0 over the first ``anneal_frac`` of the steps)::

    every MLP: out = W_out^T (phi_beta(W_gate^T x) * (W_in^T x)),   phi_beta(g) = (2 - beta) g sigmoid(beta g)
    loss = (1 - w) CE(student(tokens), next tokens) + w KL(teacher || student)      (w = distill)

``phi_1`` is SiLU (the original model) and ``phi_0(g) = g`` the bilinear gate; the teacher is the frozen
original. At the end every annealed block (at ``beta = 0``) is swapped for the exactly equal
:class:`~bilinear_lens.BilinearMLP` and the model is written as a plain Hugging Face Llama folder. With
``baseline`` the SwiGLU blocks are trained unchanged with the same data, schedule and loss.

The run folder (kind ``conversion``): ``run.json``, ``checkpoint/`` (resumable, no Python objects),
``model/`` and ``metrics.json`` (validation before training, of the plain swap, during and after
training; the per-step history; memory per process).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from bilinear_lens.convert.config import OWNED, ConvertConfig
from bilinear_lens.convert.swap import (check_convertible, convert_to_bilinear, finalize_bilinear, set_beta,
                                        swap_to_annealed)
from bilinear_lens.runs import RunError, check_int, check_out_path, require_finite
from bilinear_lens.text.batches import Batch, TokenBlocks, padded_batches
from bilinear_lens.text.sources import read_texts
from bilinear_lens.text.tokens import blocks_of, encode, tokenize_stories
from bilinear_lens.training.checkpoint import Counter, check_fsdp_setting, export_model
from bilinear_lens.training.loop import Job, steps_for_tokens, to_device, train
from bilinear_lens.training.losses import validation_loss
from bilinear_lens.training.optim import freeze_biases
from bilinear_lens.training.parallel import Processes
from bilinear_lens.training.schedule import BetaSchedule

KIND, VERSION = "conversion", 2  # version 2: the shared training loop's warm-up and settings
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model"]

__all__ = ["check_vocab", "load_swiglu_model", "resolve_model_folder", "run_convert"]


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


def load_swiglu_model(cfg: ConvertConfig) -> Tuple[Any, Any]:
    """The SwiGLU HookedTransformer (raw weights, no processing) and tokenizer of ``cfg.model``."""
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
    try:
        layers = json.loads((Path(folder) / "config.json").read_text())["num_hidden_layers"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the loader names what is wrong with config.json
    if isinstance(layers, int):
        check_int("--first-n-layers", n, 1, layers)


def check_vocab(tokenizer: Any, d_vocab: int) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding."""
    if len(tokenizer) > d_vocab:
        raise ValueError(f"tokenizer vocabulary ({len(tokenizer)} tokens) does not match the model (d_vocab="
                         f"{d_vocab}): ids >= {d_vocab} would index past the embedding. Pass the model's own "
                         "tokenizer (--tokenizer DIR)")


def _validation_source(cfg: ConvertConfig) -> Optional[str]:
    if cfg.val_data is not None or not Path(cfg.data).is_file():
        return cfg.val_data
    cand = Path(cfg.data).with_name("validation.txt")
    return str(cand) if cand.exists() and cand != Path(cfg.data) else None


def _data(cfg: ConvertConfig, tokenizer: Any, n_ctx: int, n_processes: int) -> Tuple[TokenBlocks, List[Batch]]:
    """Training blocks (in the run's order) and the validation batches (DATA.md's protocol: the first
    ``val_stories`` stories, each alone as ``[BOS] + tokens``, cut to ``val_max_len``)."""
    texts = read_texts(cfg.data, text_field=cfg.text_field, limit=cfg.train_limit)
    stream = tokenize_stories(texts, tokenizer)
    if stream.numel() < cfg.seq_len:
        raise ValueError(f"the dataset is too small: {stream.numel()} tokens make no block of seq_len="
                         f"{cfg.seq_len} tokens")
    data = TokenBlocks(blocks_of(stream, cfg.seq_len), seed=cfg.seed)
    per_step = cfg.loop.batch_size * cfg.loop.grad_accum * n_processes
    if len(data) < per_step:
        raise ValueError(f"the dataset is too small: {len(data)} blocks of {cfg.seq_len} tokens, but one optimiser "
                         f"step needs {per_step} (batch_size x grad_accum x processes)")
    source = _validation_source(cfg)
    if source is None:
        return data, []
    val_texts = read_texts(source, split="validation", text_field=cfg.text_field, limit=cfg.val_stories)
    return data, padded_batches(encode(val_texts, tokenizer), min(cfg.val_max_len, n_ctx),
                                pad_id=tokenizer.bos_token_id)


def run_convert(cfg: ConvertConfig, model: Any = None, tokenizer: Any = None) -> Dict[str, Any]:
    """Run (or resume) one conversion; returns the metrics also written to ``out/metrics.json``.

    ``out`` follows the run-folder contract (:func:`bilinear_lens.runs.open_run`, kind ``conversion``),
    opened and locked by the main process; every process stops together on a refusal. Everything is
    checked (options, model, data) before the folder is touched."""
    cfg.check()
    with cfg.run.torch_threads():
        procs = Processes(fsdp=cfg.loop.fsdp, bf16=cfg.loop.bf16)
        procs.on_main(lambda: check_out_path(cfg.run.out))
        if model is None:
            model, tokenizer = load_swiglu_model(cfg)
        check_convertible(model)
        require_finite(model.named_parameters(), what=f"--model {cfg.model}",
                       fix="the model is corrupt: convert a model with finite weights")
        check_vocab(tokenizer, model.cfg.d_vocab)
        if cfg.seq_len > model.cfg.n_ctx:
            raise ValueError(f"seq_len={cfg.seq_len} exceeds the model context n_ctx={model.cfg.n_ctx}")
        torch.manual_seed(cfg.seed)
        data, val = _data(cfg, tokenizer, model.cfg.n_ctx, procs.n)
        inputs = [p for p in (cfg.model, cfg.data, cfg.tokenizer, _validation_source(cfg)) if p and Path(p).exists()]
        with procs.open_run(cfg.run.out, KIND, cfg.identity(), resume=cfg.run.resume, overwrite=cfg.run.overwrite,
                            owned=OWNED, inputs=inputs, version=VERSION) as shared:
            if shared.finished is not None:
                check_fsdp_setting(shared.finished.get("sharded"), cfg.loop.fsdp, f"{cfg.run.out}/checkpoint")
                return shared.finished
            return _convert(cfg, procs, shared, model, tokenizer, data, val)


def _before_training(cfg: ConvertConfig, model: Any, val: List[Batch], device: Any) -> Dict[str, Any]:
    """Validation of the untouched model and of the plain swap (``beta`` straight to 0)."""
    extra: Dict[str, Any] = {"val_loss_original": validation_loss(model, val, device) if val else None}
    swapped = convert_to_bilinear(copy.deepcopy(model))
    extra["val_loss_swapped"] = validation_loss(swapped, val, device) if val else None
    extra["val_loss_start"] = extra["val_loss_original"] if cfg.baseline else extra["val_loss_swapped"]
    return extra


def _convert(cfg: ConvertConfig, procs: Processes, shared: Any, model: Any, tokenizer: Any, data: TokenBlocks,
             val: List[Batch]) -> Dict[str, Any]:
    per_step = cfg.loop.batch_size * cfg.loop.grad_accum * procs.n
    total = steps_for_tokens(cfg.tokens, per_step, cfg.seq_len)
    counter = Counter()
    to_device(model, procs.device)
    if not shared.has_checkpoint:
        counter.extra.update(_before_training(cfg, model, val, procs.device))
    teacher = None
    if cfg.distill > 0:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        if cfg.loop.bf16:  # the frozen teacher only runs under bf16 autocast: keep it in bf16 (half the bytes)
            teacher.to(torch.bfloat16)
    if not cfg.baseline:
        swap_to_annealed(model, beta=1.0)
    freeze_biases(model)
    beta_at = BetaSchedule(total, cfg.anneal.anneal_frac, cfg.anneal.beta_schedule)
    final_beta = 1.0 if cfg.baseline else 0.0

    def before_step(raw: Any, step: int) -> Dict[str, float]:
        beta = 1.0 if cfg.baseline else beta_at(step)
        set_beta(raw, beta)
        return {"beta": beta}

    job = Job(model=model, data=data, total_steps=total, val=val, teacher=teacher, distill=cfg.distill,
              before_step=before_step, before_final=lambda raw: set_beta(raw, final_beta), seed=cfg.seed,
              desc=f"convert[{cfg.mode}]", progress=cfg.run.progress)
    trained = train(Path(cfg.run.out), shared.run, job, cfg.optim, cfg.loop, procs, counter)
    metrics = {
        "mode": cfg.mode, "tokens": trained.tokens, "steps": total,
        **{k: counter.extra.get(k) for k in ("val_loss_original", "val_loss_swapped", "val_loss_start")},
        "val_loss_final": trained.val_loss, "val_stories": cfg.val_stories if val else 0,
        "val_source": _validation_source(cfg), "train_tokens_available": data.n_tokens, "processes": procs.n,
        "sharded": cfg.loop.fsdp, "memory_bytes_per_process": trained.memory,
        "seconds_this_session": trained.seconds_this_session, "steps_this_session": trained.steps_this_session,
        "train_seconds": trained.train_seconds, "history": counter.history, "config": cfg.identity(),
    }
    if trained.model is not None:  # the main process
        if not cfg.baseline:
            set_beta(trained.model, 0.0)
            finalize_bilinear(trained.model)  # at beta = 0 the annealed block is exactly BilinearMLP
        export_model(shared.run, "model", trained.model, tokenizer)
        shared.run.write_json("metrics.json", metrics)
        shared.run.finish()
    procs.wait()
    return metrics
