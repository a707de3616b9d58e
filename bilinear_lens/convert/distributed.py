"""Processes for the converter: the ``Accelerator``, and main-process decisions (the run folder)
shared with all processes."""

from __future__ import annotations

import os
from typing import Any

import torch


def make_accelerator(mixed_precision: str) -> Any:
    """An ``Accelerator`` for this process.

    * One process: a previous run's settings (accelerate keeps one global state per process) are
      reset, so that several runs in one Python process can differ in precision.
    * Several processes (``accelerate launch`` or ``torchrun``, ``WORLD_SIZE > 1``): on a machine
      without CUDA, accelerate only forms the process group when told to use the CPU
      (``ACCELERATE_USE_CPU``); it is set here, so that ``torchrun`` and ``accelerate launch
      --multi_gpu`` work on CPU processes too (``accelerate launch --cpu`` starts a single process). A launcher whose processes still end up alone is refused, since each
      would train its own copy into the same folder.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    if world == 1 and AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(mixed_precision=mixed_precision)
    if acc.num_processes != world:
        raise RuntimeError(
            f"the launcher started {world} processes (WORLD_SIZE) but accelerate formed a group of "
            f"{acc.num_processes}; launch with `accelerate launch --multi_gpu --num_processes {world} -m "
            f"bilinear_lens.cli convert ...` or `torchrun --nproc_per_node {world} -m bilinear_lens.cli "
            "convert ...` (accelerate's --cpu flag starts one process).")
    return acc


def on_main(acc: Any, fn: Any) -> Any:
    """``fn()`` on the main process only (e.g. checking and clearing the output folder); its result,
    or its ``ValueError``, is shared with every process, so that all of them go on or stop together."""
    result, error = None, None
    if acc.is_main_process:
        try:
            result = fn()
        except ValueError as e:
            error = str(e)
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        result, error = broadcast_object_list([result, error], from_process=0)
    if error is not None:
        raise ValueError(error)
    return result
