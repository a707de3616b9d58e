"""Sharded data parallelism (``--fsdp``): torch FSDP2, one unit per block.

Every transformer block, then the whole model, is wrapped with ``torch.distributed.fsdp.fully_shard``,
so each of ``N`` processes holds ``1/N`` of the weights, gradients and AdamW moments (for
TinyLlama-1.1B: 17.6 GB of float32 training state become ``17.6 / N`` GB per GPU) and all-gathers one
block at a time for its forward and backward. The same code runs over NCCL on GPUs and over gloo on
CPU processes (where the tests exercise it). Checkpoints gather the full model and optimiser state
onto the main process and write it without Python object serialisation (:mod:`bilinear_lens.training.checkpoint`, which
says why ``torch.distributed.checkpoint`` folders are not used); the export gathers the full state
dict onto the main process too.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch
from torch import nn

__all__ = ["check_launcher_fsdp", "cpu_copy", "export_copy", "full_state_dict", "memory_report", "shard_model"]


def check_launcher_fsdp(distributed_type: Any) -> None:
    """Refuse accelerate's own FSDP wrapping (``accelerate launch --use_fsdp``): the converter swaps
    MLP modules and the training loop exports whole models, which it does on its own FSDP2 units (``--fsdp``)."""
    if str(distributed_type).endswith("FSDP") or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise ValueError(
            "accelerate's FSDP plugin (--use_fsdp / ACCELERATE_USE_FSDP) is not used by bilinear-lens; "
            "launch plain data parallel (`accelerate launch --num_processes N -m bilinear_lens.cli "
            "COMMAND ...`) and pass --fsdp to shard every block with torch FSDP2.")


def shard_model(model: nn.Module, inference: bool = False) -> nn.Module:
    """``fully_shard`` each block of a HookedTransformer, then the model (embeddings, final norm,
    unembedding); parameters become ``DTensor`` shards over the default process group.

    FSDP2 keeps the root's parameters gathered after a forward (the backward would gather them
    again); an ``inference`` model (the frozen teacher) has no backward, so it reshards at once."""
    import warnings

    from torch.distributed.fsdp import fully_shard

    # HookedTransformer returns its logits as a view; FSDP2 warns that in-place ops on it would skip
    # the backward all-gather. The converter never modifies logits in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    if inference:
        model.register_forward_hook(lambda module, args, output: module.reshard())
    return model


def cpu_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the CPU, made without a second
    copy on the accelerator (``deepcopy`` with the tensors pre-copied into its memo)."""
    import copy

    memo = {id(p): nn.Parameter(p.detach().to("cpu", copy=True), requires_grad=p.requires_grad)
            for p in model.parameters()}
    memo.update({id(b): b.detach().to("cpu", copy=True) for b in model.buffers()})
    return copy.deepcopy(model, memo)


def full_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The unsharded ``state_dict`` on CPU (collective: every process must call it; the main
    process receives the tensors, the others an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_copy(template: Optional[nn.Module], model: nn.Module) -> Optional[nn.Module]:
    """Gather the sharded ``model`` into ``template`` (an unsharded CPU copy made before sharding,
    held by the main process; ``None`` elsewhere). Collective; returns the filled template."""
    full = full_state_dict(model)
    if template is None:
        return None
    template.load_state_dict(full)
    return template


def _local_bytes(t: torch.Tensor) -> int:
    """Bytes this process holds for ``t`` (its shard, for a ``DTensor``)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def memory_report(model: nn.Module, opt: torch.optim.Optimizer,
                  teacher: Optional[nn.Module] = None) -> Dict[str, float]:
    """Per-process training memory, in bytes: ``weights`` (all parameters and buffers held here),
    ``gradients`` (one per trainable parameter), ``optimizer`` (AdamW moments), ``teacher`` (the
    frozen distillation teacher's weights), their sum ``states``,
    the process's peak resident memory ``peak_rss`` and, on CUDA, ``cuda_peak_allocated``.

    With ``N`` sharded processes the first three are about ``1/N`` of the unsharded numbers."""
    import resource

    weights = sum(_local_bytes(p) for p in model.parameters()) + sum(_local_bytes(b) for b in model.buffers())
    grads = sum(_local_bytes(p) for p in model.parameters() if p.requires_grad)
    optim = sum(_local_bytes(v) for state in opt.state.values() for v in state.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0)
    held = sum(_local_bytes(p) for p in teacher.parameters()) if teacher is not None else 0
    report = {"weights": weights, "gradients": grads, "optimizer": optim, "teacher": held,
              "states": weights + grads + optim + held,
              "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        report["cuda_peak_allocated"] = torch.cuda.max_memory_allocated()
    return report
