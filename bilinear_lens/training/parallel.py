"""Processes of a training run: one, data parallel, or sharded (FSDP2), behind one interface.

``Processes(fsdp=..., bf16=...)`` wraps an ``accelerate.Accelerator`` for this process:

* one process (``python -m bilinear_lens.cli ...``);
* data parallel over the processes of ``accelerate launch`` / ``torchrun`` (GPUs over NCCL, or CPU
  processes over gloo): every process holds the model, reads its own slice of each step's sequences,
  and gradients are averaged (DDP);
* ``fsdp=True``: every block, then the model, is wrapped with torch FSDP2 ``fully_shard``
  (:mod:`bilinear_lens.training.sharding`), so each of ``N`` processes holds ``1/N`` of the weights,
  gradients and AdamW moments.

The training loop (:mod:`bilinear_lens.training.loop`) calls the same methods in every case:
``setup`` (shard / wrap the model, make the optimiser), ``micro_batch`` (no gradient sync before the
last micro-batch), ``backward``, ``clip``, ``mean``, ``export`` (the whole model on the main process),
and ``on_main`` for decisions the main process takes for all (the run folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["Processes", "SharedRun", "make_accelerator", "on_main", "quiet_moves"]


def quiet_moves() -> ContextManager[Any]:
    """Silence stdout while modules move between devices (``HookedTransformer.to`` prints every move)."""
    return contextlib.redirect_stdout(io.StringIO())


def make_accelerator(mixed_precision: str) -> Any:
    """An ``Accelerator`` for this process.

    * One process: a previous run's settings (accelerate keeps one global state per process) are
      reset, so that several runs in one Python process can differ in precision.
    * Several processes (``WORLD_SIZE > 1``): on a machine without CUDA, accelerate forms the process
      group only when told to use the CPU (``ACCELERATE_USE_CPU``); it is set here, so that ``torchrun``
      and ``accelerate launch --multi_gpu`` work on CPU processes too. A launcher whose processes still
      end up alone is refused, since each would train its own copy into the same folder.
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
            f"bilinear_lens.cli COMMAND ...` or `torchrun --nproc_per_node {world} -m bilinear_lens.cli COMMAND "
            "...` (accelerate's --cpu flag starts one process).")
    return acc


def on_main(acc: Any, fn: Callable[[], Any]) -> Any:
    """``fn()`` on the main process only (e.g. checking and opening the run folder); its result, or its
    ``ValueError``, is shared with every process, so that all of them go on or stop together."""
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


class Processes:
    """This process's part in a run (module docstring)."""

    def __init__(self, fsdp: bool = False, bf16: bool = False):
        from bilinear_lens.training.sharding import check_launcher_fsdp

        self.acc = make_accelerator("bf16" if bf16 else "no")
        check_launcher_fsdp(self.acc.distributed_type)
        if fsdp and self.acc.num_processes == 1:
            raise ValueError("--fsdp shards the model over several processes, but this is one process; launch with "
                             "`accelerate launch --num_processes N -m bilinear_lens.cli COMMAND ... --fsdp`, or "
                             "drop --fsdp")
        self.fsdp = fsdp

    @property
    def n(self) -> int:
        return self.acc.num_processes

    @property
    def rank(self) -> int:
        return self.acc.process_index

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    @property
    def device(self) -> torch.device:
        return self.acc.device

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return on_main(self.acc, fn)

    def template(self, model: nn.Module) -> Optional[nn.Module]:
        """Under FSDP, on the main process: an unsharded CPU copy of ``model`` that :meth:`export` fills at the
        end (made before gradient checkpointing wraps the blocks); otherwise None."""
        from bilinear_lens.training.sharding import cpu_copy

        return cpu_copy(model) if self.fsdp and self.is_main else None

    def setup(self, model: nn.Module, teacher: Optional[nn.Module],
              make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
              ) -> Tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
        """Shard (FSDP) or wrap (DDP) ``model`` and make its optimiser; returns ``(model, raw, opt)``: the
        model to call, the unwrapped module, the optimiser."""
        if self.fsdp:
            from bilinear_lens.training.sharding import shard_model

            shard_model(model)
            if teacher is not None:
                shard_model(teacher, inference=True)
            return model, model, make_optimizer(model)
        opt = make_optimizer(model)
        with quiet_moves():
            wrapped, opt = self.acc.prepare(model, opt)
        return wrapped, self.acc.unwrap_model(wrapped), opt

    def micro_batch(self, model: nn.Module, last: bool) -> ContextManager[Any]:
        """The context of one micro-batch's forward and backward: no gradient sync before the last one,
        autocast when bf16 was asked for."""
        stack = contextlib.ExitStack()
        if not last:
            stack.enter_context(self.acc.no_sync(model))
        stack.enter_context(self.acc.autocast())
        return stack

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def clip(self, params: Any, max_norm: float) -> None:
        self.acc.clip_grad_norm_(params, max_norm)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over processes."""
        return self.acc.reduce(values, "mean") if self.n > 1 else values

    def export(self, raw: nn.Module, template: Optional[nn.Module]) -> Optional[nn.Module]:
        """The whole trained model on the main process (``None`` elsewhere); collective under FSDP."""
        if not self.fsdp:
            return raw if self.is_main else None
        from bilinear_lens.training.sharding import export_copy

        return export_copy(template, raw)

    def wait(self) -> None:
        self.acc.wait_for_everyone()

    @contextlib.contextmanager
    def open_run(self, out: str, kind: str, identity: Dict[str, Any], *, resume: bool, overwrite: bool,
                 owned: Sequence[str], inputs: Sequence[Any] = (), version: int = 1) -> Iterator["SharedRun"]:
        """The run folder, opened and locked by the main process (:func:`bilinear_lens.runs.open_run`), its
        refusal or state shared with every process; closed (undone on an error before the first checkpoint)
        when the block ends. A finished run's ``metrics.json`` is read and returned as ``finished``."""
        from bilinear_lens.runs import open_run

        holder: Dict[str, Any] = {}

        def open_folder() -> Dict[str, Any]:
            run = holder["run"] = open_run(out, kind, identity, resume=resume, overwrite=overwrite, owned=owned,
                                           inputs=inputs, version=version)
            done = json.loads(run.file("metrics.json").read_text()) if run.finished else None
            checkpoint = run.resuming and run.file("checkpoint/state.json").is_file()
            return {"resuming": run.resuming, "finished": done, "checkpoint": checkpoint}

        opened = self.on_main(open_folder)
        run = holder.get("run")
        failed = True
        try:
            yield SharedRun(run, opened["resuming"], opened["finished"], opened["checkpoint"])
            failed = False
        finally:
            if run is not None:
                run.close(failed=failed)


@dataclass
class SharedRun:
    """A run folder as every process sees it: ``run`` (the main process's ``RunFolder``, None elsewhere),
    whether an earlier run is continued, its metrics when it had finished, whether it has a checkpoint."""

    run: Any
    resuming: bool
    finished: Optional[Dict[str, Any]]
    has_checkpoint: bool
