"""Train SAELens sparse autoencoders on a bilinear layer's MLP input or output, fully offline.

The two spaces the weight-based decomposition talks about:

* ``hook="in"``: ``blocks.{L}.mlp.hook_in``, the BilinearMLP's own input ``x`` (after ``ln2`` and its
  weight), ``[batch, pos, d_model]``: the space eigenvectors ``v_i`` live in
  (``u . (MLP(x) - b_out) = x^T Q(u) x = sum_i lambda_i (v_i . x)^2``).
* ``hook="out"``: ``blocks.{L}.hook_mlp_out``, the MLP output ``[batch, pos, d_model]``: the space
  output directions ``u`` (an output SAE's encoder rows) live in.

Training loop (ours, around SAELens' training SAE classes and ``SAETrainer``'s public ``step``):
step ``s`` of ``S = training_tokens // batch_size_tokens`` (``B`` tokens a step) takes the rows
``batch_indices(s, R, n_rows, seed)`` (one permutation of the rows per epoch, ``R =
ceil(1.25 B / (context - 1))``), runs the model to the hook, keeps every position but 0 whose token
is not BOS, and draws ``B`` of those activations ``[B, d_model]`` with a generator seeded by
``(seed, s)``: the data of a step is a function of the step alone. ``SAETrainer.step`` then does
SAELens' own update (its training loss, dead-feature tracking, grad clip 1, Adam, cosine schedule
``lr -> lr_end``). Checkpoints (``checkpoint/state``, ``n_checkpoints`` of them) hold the SAE, Adam,
scheduler, feature statistics, step and RNG via :func:`bilinear_lens.runs.save_state` (no Python objects),
so a resumed run ends bit-identical to an uninterrupted one.

The folder (the run-folder contract of :mod:`bilinear_lens.runs`, kind ``train-sae``) ends in
SAELens' format (``cfg.json``, ``sae_weights.safetensors``, ``sparsity.safetensors``:
``SAE.load_from_disk(out)`` works) plus ``evals.json`` (SAELens' ``run_evals``: explained variance,
L0, CE loss recovered; :mod:`bilinear_lens.sae.evals`) and ``run.json``, whose identity records the
model's weights digest and the hook (:mod:`bilinear_lens.sae.identity`; ``compare`` checks it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from bilinear_lens.runs import InjectedFailure, RunError, RunFolder, open_run, require_finite_loss, rng_state, set_rng_state
from bilinear_lens.sae.config import SAETrainConfig
from bilinear_lens.training.progress import progress_bar

def training_architectures() -> list:
    """Names accepted by ``architecture``: SAELens' training registry (``topk``, ``jumprelu``, ...)."""
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    return sorted(SAE_TRAINING_CLASS_REGISTRY)


def _training_sae_config(cfg: SAETrainConfig, d_in: int) -> Any:
    """The SAELens ``<Arch>TrainingSAEConfig`` for ``cfg.architecture`` (clear error if unknown)."""
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    if cfg.architecture not in SAE_TRAINING_CLASS_REGISTRY:
        raise ValueError(f"unknown SAE architecture {cfg.architecture!r}; SAELens can train: "
                         f"{', '.join(training_architectures())}.")
    _, config_class = SAE_TRAINING_CLASS_REGISTRY[cfg.architecture]
    names = {f.name for f in dataclasses.fields(config_class)}
    d_sae = cfg.expansion * d_in
    kw: Dict[str, Any] = dict(d_in=d_in, d_sae=d_sae, device=cfg.device)
    if "k" in names:
        if not 0 < cfg.k <= d_sae:
            raise ValueError(f"k={cfg.k} must be between 1 and d_sae={d_sae}.")
        kw["k"] = cfg.k
    if "matryoshka_widths" in names:
        kw["matryoshka_widths"] = [d_sae // 4, d_sae // 2, d_sae]
    unknown = set(cfg.sae_kwargs) - names
    if unknown:
        raise ValueError(f"{cfg.architecture} SAEs have no option(s) {sorted(unknown)}; "
                         f"available: {sorted(names - {'d_in', 'd_sae', 'metadata'})}.")
    kw.update(cfg.sae_kwargs)
    return config_class(**kw)


def check_tokens(tokens: Tensor, context_size: int, name: str = "tokens") -> None:
    """Rows must be pre-tokenised blocks ``[n_rows, context_size]`` of integer ids."""
    if tokens.ndim != 2 or tokens.dtype.is_floating_point:
        raise ValueError(f"{name} must be an integer tensor [n_rows, context_size], got "
                         f"{tuple(tokens.shape)} {tokens.dtype}.")
    if tokens.shape[1] != context_size:
        raise ValueError(f"{name} rows have {tokens.shape[1]} tokens but context_size is "
                         f"{context_size}; cut the data into blocks of context_size tokens.")


OWNED = ("run.json", "checkpoint", "cfg.json", "sae_weights.safetensors", "sparsity.safetensors",
         "evals.json")
"""The entries a ``train-sae`` run writes (what ``--overwrite`` replaces)."""


def rows_per_step(cfg: SAETrainConfig) -> int:
    """Rows whose activations one step draws its ``batch_size_tokens`` from (25% spare for BOS)."""
    return max(1, math.ceil(1.25 * cfg.batch_size_tokens / (cfg.context_size - 1)))


@torch.no_grad()
def step_activations(model: Any, tokens: Int[Tensor, "n_rows context"], step: int, cfg: SAETrainConfig,
                     bos: Optional[int]) -> Tensor:
    """The ``[batch_size_tokens, d_model]`` activations of ``step`` (module docstring)."""
    from bilinear_lens.text.batches import order_indices

    per = rows_per_step(cfg)
    rows = tokens[order_indices(step * per, per, len(tokens), cfg.seed)]
    _, cache = model.run_with_cache(rows, names_filter=cfg.hook_name, stop_at_layer=cfg.layer + 1)
    acts = cache[cfg.hook_name][:, 1:].reshape(-1, model.cfg.d_model)
    if bos is not None:
        acts = acts[(rows[:, 1:] != bos).reshape(-1)]
    if len(acts) == 0:
        raise RunError(f"step {step} drew rows made only of BOS tokens; pass real text (--data).")
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randperm(len(acts), generator=g)[: cfg.batch_size_tokens]
    if len(idx) < cfg.batch_size_tokens:  # short rows: draw the rest with replacement
        idx = torch.cat([idx, torch.randint(len(acts), (cfg.batch_size_tokens - len(idx),), generator=g)])
    return acts[idx].float()


def _trainer(cfg: SAETrainConfig, sae_cfg: Any, steps: int) -> Any:
    from sae_lens import LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.sae import TrainingSAE

    torch.manual_seed(cfg.seed)
    sae = TrainingSAE.from_dict(sae_cfg.to_dict())
    tcfg = SAETrainerConfig(
        total_training_samples=steps * cfg.batch_size_tokens, train_batch_size_samples=cfg.batch_size_tokens,
        lr=cfg.lr, lr_end=cfg.lr_end if cfg.lr_end is not None else cfg.lr / 10,
        lr_scheduler_name="cosineannealing", device=cfg.device, dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=cfg.feature_sampling_window, logger=LoggingConfig(log_to_wandb=False))
    return SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))


def _state(trainer: Any, step: int) -> Dict[str, Any]:
    return {"step": step, "sae": trainer.sae.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.lr_scheduler.state_dict(), "act_freq_scores": trainer.act_freq_scores,
            "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired,
            "n_frac_active_samples": int(trainer.n_frac_active_samples),
            "n_training_steps": int(trainer.n_training_steps), "n_training_samples": int(trainer.n_training_samples),
            "coefficients": {k: {"current_step": v.current_step, "current_value": v.current_value}
                             for k, v in trainer.coefficient_schedulers.items()},
            "rng": rng_state()}


def _restore(trainer: Any, state: Dict[str, Any], where: Path) -> int:
    try:
        trainer.sae.load_state_dict(state["sae"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_scheduler.load_state_dict(state["scheduler"])
        trainer.act_freq_scores.copy_(state["act_freq_scores"])
        trainer.n_forward_passes_since_fired.copy_(state["n_forward_passes_since_fired"])
        trainer.n_frac_active_samples = state["n_frac_active_samples"]
        trainer.n_training_steps = state["n_training_steps"]
        trainer.n_training_samples = state["n_training_samples"]
        for k, v in state["coefficients"].items():
            trainer.coefficient_schedulers[k].current_step = v["current_step"]
            trainer.coefficient_schedulers[k].current_value = v["current_value"]
        set_rng_state(state["rng"])
        return int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunError(f"{where}.json does not match this SAE ({type(e).__name__}); the checkpoint is "
                       "corrupt: restart the run with --overwrite.") from e


def _metadata(trainer: Any, cfg: SAETrainConfig, model_name: str, bos: Optional[int]) -> None:
    meta = trainer.sae.cfg.metadata
    meta.hook_name, meta.model_name, meta.context_size = cfg.hook_name, model_name, cfg.context_size
    meta.prepend_bos, meta.seqpos_slice = False, (1, None)
    meta.exclude_special_tokens = [bos] if bos is not None else False
    meta.model_from_pretrained_kwargs = {}
    trainer.set_final_sae_metadata()


def _record_processing(run: RunFolder, model: Any) -> None:
    """The model's processing (fold_ln) travels with the SAE: ``check_processing`` refuses a mismatch."""
    from bilinear_lens.hooks.processing import METADATA_KEY, processing_signature

    cfg_json = json.loads(run.file("cfg.json").read_text())
    cfg_json.setdefault("metadata", {})[METADATA_KEY] = processing_signature(model)
    run.write_json("cfg.json", cfg_json)


def _save_final(run: RunFolder, trainer: Any) -> None:
    """SAELens' inference folder format at the top of the run folder (each file renamed into place)."""
    from bilinear_lens.runs import save_tensors
    from bilinear_lens.runs.atomic import temp_sibling

    tmp = temp_sibling(run.file("final"))
    trainer.sae.save_inference_model(str(tmp))
    save_tensors(tmp / "sparsity.safetensors", {"sparsity": trainer.log_feature_sparsity.detach().cpu()})
    run.move_in(tmp)


def train_sae(
    model: Any,
    tokens: Int[Tensor, "n_rows context"],
    out: Union[str, Path],
    cfg: SAETrainConfig,
    eval_tokens: Optional[Int[Tensor, "n_eval context"]] = None,
    model_name: str = "bilinear-lens-model",
    *, resume: bool = False, overwrite: bool = False, inputs: Sequence[Any] = (), progress: bool = False,
    fail_at_step: Optional[int] = None,
) -> Dict[str, Any]:
    """Train an SAE on ``cfg.hook_name`` of ``model`` into the run folder ``out`` (module docstring).

    ``tokens`` are the training rows (repeated as epochs when ``training_tokens`` exceeds them);
    ``eval_tokens`` (default: ``tokens``) feed ``run_evals``. ``resume`` / ``overwrite`` as in every
    command (:func:`bilinear_lens.runs.open_run`); ``inputs``: files the run reads (refused inside
    ``out`` with ``overwrite``). Returns the evals summary written to ``out/evals.json``.
    """
    from bilinear_lens.sae.identity import model_identity, tokens_digest

    cfg.check()
    cfg.check_layer(model.cfg.n_layers)
    if cfg.hook_name not in model.hook_dict:
        why = ""
        if cfg.hook == "in":  # only bilinear layers have hook_in
            from bilinear_lens.decomposition.weights import mlp_layers, not_bilinear_message

            why = f": {not_bilinear_message(mlp_layers(model)[cfg.layer], model, cfg.layer)} Or train on the " \
                  "layer's output (--hook out)"
        raise RunError(f"the model has no hook {cfg.hook_name!r}{why}.")
    check_tokens(tokens, cfg.context_size)
    eval_tokens = tokens if eval_tokens is None else eval_tokens
    check_tokens(eval_tokens, cfg.context_size, "eval_tokens")
    sae_cfg = _training_sae_config(cfg, model.cfg.d_model)
    identity = {**cfg.identity(), "model": model_identity(model), "tokens": tokens_digest(tokens),
                "eval_tokens": tokens_digest(eval_tokens)}
    with open_run(out, "train-sae", identity, resume=resume, overwrite=overwrite, owned=OWNED,
                  inputs=inputs) as run:
        if run.finished:
            from bilinear_lens.sae.evals import read_evals

            return read_evals(run.path)
        summary = _train(model, tokens, eval_tokens, run, cfg, sae_cfg, model_name, progress, fail_at_step)
        run.finish(OWNED[2:])
    return summary


def _train(model: Any, tokens: Tensor, eval_tokens: Tensor, run: RunFolder, cfg: SAETrainConfig,
           sae_cfg: Any, model_name: str, progress: bool, fail_at_step: Optional[int]) -> Dict[str, Any]:
    from bilinear_lens.sae.evals import evaluate_sae, write_evals

    steps = cfg.training_tokens // cfg.batch_size_tokens
    every = math.ceil(steps / (cfg.n_checkpoints + 1)) if cfg.n_checkpoints else steps + 1
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    trainer = _trainer(cfg, sae_cfg, steps)
    ckpt = run.file("checkpoint") / "state"
    state = run.load_state("checkpoint/state") if run.resuming else None
    start = _restore(trainer, state, ckpt) if state is not None else 0
    bar = progress_bar(steps, initial=start, desc=f"train-sae {cfg.hook_name}", enabled=progress)
    for step in range(start, steps):
        if fail_at_step is not None and step == fail_at_step:
            raise InjectedFailure(f"injected failure at the start of step {step}")
        trainer.maybe_reset_sparsity()
        output = trainer.step(step_activations(model, tokens, step, cfg, bos))
        require_finite_loss(float(output.loss.detach()), step + 1, f"the last checkpoint in {ckpt.parent}")
        trainer.n_training_steps += 1
        bar.update(1)
        if (step + 1) % every == 0 and step + 1 < steps:
            run.save_state("checkpoint/state", _state(trainer, step + 1))
    bar.close()
    _metadata(trainer, cfg, model_name, bos)
    _save_final(run, trainer)
    _record_processing(run, model)
    summary = evaluate_sae(model, run.path, eval_tokens, n_batches=cfg.eval_batches,
                           batch_prompts=cfg.eval_batch_prompts)
    summary["training"] = {
        "architecture": cfg.architecture, "hook_name": cfg.hook_name, "layer": cfg.layer, "side": cfg.hook,
        "k": cfg.k if "k" in {f.name for f in dataclasses.fields(sae_cfg)} else None,
        "expansion": cfg.expansion, "training_tokens": steps * cfg.batch_size_tokens,
        "batch_size_tokens": cfg.batch_size_tokens, "lr": cfg.lr, "context_size": cfg.context_size,
        "steps": steps, "resumed_from_step": start or None,
        "num_dead_features": trainer.sae.cfg.metadata.num_dead_features,
    }
    write_evals(run.file("evals.json"), summary)
    shutil.rmtree(run.file("checkpoint"), ignore_errors=True)
    return summary
