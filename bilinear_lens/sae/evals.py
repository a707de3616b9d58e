"""SAELens' own evals for an SAE on a model's hook, offline, summarised to a small JSON.

``run_evals`` splices the SAE reconstruction into the model at the SAE's hook and reports

* explained variance ``1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2`` (``reconstruction_quality``),
* L0 = mean number of active features per token (``sparsity``),
* CE loss recovered ``(CE_ablation - CE_sae) / (CE_ablation - CE_clean)``, ablation = zeroing the hook
  (``model_performance_preservation/ce_loss_score``), with the three raw losses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Union

from jaxtyping import Int
from torch import Tensor

from bilinear_lens.runs import write_json

SUMMARY_KEYS = {
    "explained_variance": ("reconstruction_quality", "explained_variance"),
    "mse": ("reconstruction_quality", "mse"),
    "cossim": ("reconstruction_quality", "cossim"),
    "l0": ("sparsity", "l0"),
    "ce_loss_recovered": ("model_performance_preservation", "ce_loss_score"),
    "ce_loss_clean": ("model_performance_preservation", "ce_loss_without_sae"),
    "ce_loss_with_sae": ("model_performance_preservation", "ce_loss_with_sae"),
    "ce_loss_zero_ablation": ("model_performance_preservation", "ce_loss_with_ablation"),
}
"""Summary name -> (SAELens metric group, metric)."""


def write_evals(path: Union[str, Path], summary: Dict[str, Any]) -> None:
    """Write an evals summary (see :func:`evaluate_sae`)."""
    write_json(path, summary)


def read_evals(sae_dir: Union[str, Path]) -> Dict[str, Any]:
    """``sae_dir/evals.json`` as written by ``train-sae`` (empty dict when absent)."""
    path = Path(sae_dir) / "evals.json"
    return json.loads(path.read_text()) if path.exists() else {}


def evaluate_sae(
    model: Any,
    sae: Any,
    tokens: Int[Tensor, "n_rows context"],
    n_batches: int = 8,
    batch_prompts: int = 16,
) -> Dict[str, Any]:
    """Run SAELens' ``run_evals`` for ``sae`` (an SAE or its folder) on rows of ``tokens``.

    Uses ``n_batches`` batches of ``batch_prompts`` rows (capped by the rows available) for both the
    CE-loss and the variance/sparsity metrics. BOS tokens are excluded when the model has a
    tokenizer. Returns ``{"explained_variance", "l0", "ce_loss_recovered", ..., "sae_lens": <all
    metrics>}``.
    """
    from datasets import Dataset
    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.activations_store import ActivationsStore

    if not isinstance(sae, SAE):
        sae = SAE.load_from_disk(str(sae), device=str(tokens.device))
    n_rows, context = tokens.shape
    batch_prompts = max(1, min(batch_prompts, n_rows))
    n_batches = max(1, min(n_batches, n_rows // batch_prompts))
    dataset = Dataset.from_dict({"input_ids": tokens.tolist()})
    store = ActivationsStore.from_sae(
        model=model, sae=sae, dataset=dataset, context_size=context, streaming=False,
        store_batch_size_prompts=batch_prompts, train_batch_size_tokens=batch_prompts * context,
        n_batches_in_buffer=2, device=str(tokens.device))
    tokenizer = getattr(model, "tokenizer", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    metrics, _ = run_evals(
        sae=sae, activation_store=store, model=model, activation_scaler=ActivationScaler(),
        eval_config=EvalConfig(batch_size_prompts=batch_prompts, compute_ce_loss=True,
                               compute_variance_metrics=True, compute_sparsity_metrics=True,
                               compute_l2_norms=True, n_eval_reconstruction_batches=n_batches,
                               n_eval_sparsity_variance_batches=n_batches),
        exclude_special_tokens=[bos] if bos is not None else False,
    )
    summary: Dict[str, Any] = {}
    for name, (group, key) in SUMMARY_KEYS.items():
        value = metrics.get(group, {}).get(key)
        summary[name] = float(value) if value is not None else None
    summary["hook_name"] = sae.cfg.metadata.hook_name
    summary["d_sae"] = int(sae.cfg.d_sae)
    summary["architecture"] = sae.cfg.architecture()
    summary["eval_tokens"] = int(n_batches * batch_prompts * context)
    summary["sae_lens"] = metrics
    return summary
