"""Train SAELens sparse autoencoders on a bilinear layer's MLP input or output, fully offline.

The two spaces the weight-based decomposition talks about:

* ``hook="in"``: ``blocks.{L}.mlp.hook_in``, the BilinearMLP's own input ``x`` (after ``ln2`` and its
  weight), ``[batch, pos, d_model]``: the space eigenvectors ``v_i`` live in
  (``u . (MLP(x) - b_out) = x^T Q(u) x = sum_i lambda_i (v_i . x)^2``).
* ``hook="out"``: ``blocks.{L}.hook_mlp_out``, the MLP output ``[batch, pos, d_model]``: the space
  output directions ``u`` (an output SAE's encoder rows) live in.

Training goes through SAELens' own ``LanguageModelSAETrainingRunner`` with the in-process model
(``override_model``) and an in-memory ``datasets.Dataset`` of pre-tokenised ``input_ids`` rows
(``override_dataset``), wandb off, so nothing touches the network. The result is a folder in SAELens'
format (``SAE.load_from_disk(out)`` works) plus ``evals.json`` (SAELens' ``run_evals``: explained
variance, L0, CE loss recovered; see :mod:`bilinear_lens.sae.evals`).

An interrupted run resumes from its last SAELens checkpoint, kept in ``<out>.checkpoints/`` until the
final folder is written.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from jaxtyping import Int
from torch import Tensor

HOOKS = {"in": "blocks.{layer}.mlp.hook_in", "out": "blocks.{layer}.hook_mlp_out"}
"""The hook an SAE of each side is trained on (``str.format(layer=L)``)."""


def sae_hook_name(layer: int, side: str) -> str:
    """``blocks.L.mlp.hook_in`` for ``side="in"``, ``blocks.L.hook_mlp_out`` for ``side="out"``."""
    if side not in HOOKS:
        raise ValueError(f"hook must be 'in' (MLP input) or 'out' (MLP output), got {side!r}.")
    return HOOKS[side].format(layer=layer)


def training_architectures() -> list:
    """Names accepted by ``architecture``: SAELens' training registry (``topk``, ``jumprelu``, ...)."""
    from sae_lens.registry import SAE_TRAINING_CLASS_REGISTRY

    return sorted(SAE_TRAINING_CLASS_REGISTRY)


@dataclass
class SAETrainConfig:
    """What to train. ``d_sae = expansion * d_model``; steps ``= training_tokens // batch_size_tokens``.

    ``k`` is used by architectures with a ``k`` (topk, batchtopk, abstopk, matryoshka_batchtopk);
    ``sae_kwargs`` is passed on to the architecture's SAELens training config (e.g.
    ``{"l1_coefficient": 5.0}`` for ``standard``). Position 0 of every row (the attention sink /
    BOS) is left out of training, as in the paper.
    """

    layer: int
    hook: str = "in"
    architecture: str = "topk"
    k: int = 30
    expansion: int = 4
    training_tokens: int = 2_000_000
    context_size: int = 128
    batch_size_tokens: int = 4096
    lr: float = 4e-4
    lr_end: Optional[float] = None  # cosine annealing to lr/10 by default
    n_checkpoints: int = 4
    eval_batches: int = 8
    eval_batch_prompts: int = 16
    seed: int = 42
    device: str = "cpu"
    sae_kwargs: Dict[str, Any] = field(default_factory=dict)

    @property
    def hook_name(self) -> str:
        return sae_hook_name(self.layer, self.hook)


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


def _latest_checkpoint(folder: Path) -> Optional[Path]:
    """The SAELens checkpoint folder with the most training samples (``<folder>/<n>``), if any."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()
            and (p / "trainer_state.pt").exists() and (p / "runner_cfg.json").exists()]
    return max(done, key=lambda p: int(p.name), default=None)


def train_sae(
    model: Any,
    tokens: Int[Tensor, "n_rows context"],
    out: Union[str, Path],
    cfg: SAETrainConfig,
    eval_tokens: Optional[Int[Tensor, "n_eval context"]] = None,
    model_name: str = "bilinear-lens-model",
) -> Dict[str, Any]:
    """Train an SAE on ``cfg.hook_name`` of ``model`` and save it (SAELens format) plus evals.

    ``tokens`` are the training rows (repeated as epochs when ``training_tokens`` exceeds them);
    ``eval_tokens`` (default: ``tokens``) feed ``run_evals``. Returns the evals summary written to
    ``out/evals.json``. The folder appears only when complete (written through ``atomic_dir``).
    """
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig

    from bilinear_lens.hooks.processing import METADATA_KEY, processing_signature
    from bilinear_lens.runs import atomic_dir
    from bilinear_lens.sae.evals import evaluate_sae, write_evals

    out = Path(out)
    hook_name = cfg.hook_name
    if hook_name not in model.hook_dict:
        raise ValueError(f"the model has no hook {hook_name!r} (layer {cfg.layer} of a "
                         f"{model.cfg.n_layers}-layer model?).")
    check_tokens(tokens, cfg.context_size)
    if eval_tokens is None:
        eval_tokens = tokens
    check_tokens(eval_tokens, cfg.context_size, "eval_tokens")
    d_in = model.cfg.d_model
    sae_cfg = _training_sae_config(cfg, d_in)
    if cfg.batch_size_tokens > cfg.training_tokens:
        raise ValueError(f"training_tokens={cfg.training_tokens} is smaller than one batch "
                         f"({cfg.batch_size_tokens} tokens).")

    ckpt_dir = Path(str(out) + ".checkpoints")
    resume = _latest_checkpoint(ckpt_dir)
    # SAELens' mixing buffer holds n_batches_in_buffer * context_size tokens and must hold a batch.
    n_batches_in_buffer = max(8, -(-2 * cfg.batch_size_tokens // cfg.context_size))
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    dataset = Dataset.from_dict({"input_ids": tokens.tolist()})
    with atomic_dir(out) as tmp:
        runner_cfg = LanguageModelSAERunnerConfig(
            sae=sae_cfg, model_name=model_name, hook_name=hook_name,
            context_size=cfg.context_size, prepend_bos=False, streaming=False,
            seqpos_slice=(1, None), exclude_special_tokens=[bos] if bos is not None else False,
            training_tokens=cfg.training_tokens, train_batch_size_tokens=cfg.batch_size_tokens,
            store_batch_size_prompts=max(1, min(32, cfg.batch_size_tokens // cfg.context_size)),
            n_batches_in_buffer=n_batches_in_buffer, lr=cfg.lr, lr_end=cfg.lr_end,
            lr_scheduler_name="cosineannealing", seed=cfg.seed, device=cfg.device,
            logger=LoggingConfig(log_to_wandb=False), model_from_pretrained_kwargs={},
            n_checkpoints=cfg.n_checkpoints, checkpoint_path=str(ckpt_dir),
            resume_from_checkpoint=str(resume) if resume is not None else None,
            output_path=str(tmp),
        )
        runner_cfg.checkpoint_path = str(ckpt_dir)  # SAELens appends a random id; keep one folder
        if resume is not None:
            print(f"resuming SAE training from {resume}")
        torch.manual_seed(cfg.seed)
        LanguageModelSAETrainingRunner(runner_cfg, override_model=model,
                                       override_dataset=dataset).run()
        summary = evaluate_sae(model, tmp, eval_tokens, n_batches=cfg.eval_batches,
                               batch_prompts=cfg.eval_batch_prompts)
        summary["training"] = {
            "architecture": cfg.architecture, "hook_name": hook_name, "layer": cfg.layer,
            "side": cfg.hook, "k": cfg.k if "k" in {f.name for f in dataclasses.fields(sae_cfg)} else None,
            "expansion": cfg.expansion, "training_tokens": cfg.training_tokens,
            "batch_size_tokens": cfg.batch_size_tokens, "lr": cfg.lr, "context_size": cfg.context_size,
            "resumed_from": str(resume) if resume is not None else None,
        }
        cfg_json = json.loads((tmp / "cfg.json").read_text())
        summary["training"]["num_dead_features"] = cfg_json.get("metadata", {}).get("num_dead_features")
        # the model's processing (fold_ln) travels with the SAE: check_processing refuses a mismatch
        cfg_json.setdefault("metadata", {})[METADATA_KEY] = processing_signature(model)
        (tmp / "cfg.json").write_text(json.dumps(cfg_json, indent=2))
        write_evals(tmp / "evals.json", summary)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary

