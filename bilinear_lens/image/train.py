"""Training loop for :class:`BilinearClassifier`: AdamW + weight decay, cosine schedule, resumable.

Loss: cross-entropy of ``model(x)`` (input / latent noise are applied by the model in train mode).
Optimiser: ``AdamW(lr, weight_decay)`` on every trainable parameter, learning rate
``lr * (1 + cos(pi * step / total)) / 2`` after ``warmup`` linear steps. A checkpoint
(model tensors, AdamW state, epoch, history, the shuffling generator and torch's RNG) is written after
every epoch when ``checkpoint`` is given, as ``<checkpoint>.safetensors`` + ``<checkpoint>.json``
(:func:`bilinear_lens.runs.save_state`: no Python objects, so a planted file cannot run code), and training
resumes from it bit-identically. A NaN or inf loss stops training with a one-line
:class:`~bilinear_lens.runs.RunError` naming the step; the last checkpoint (the previous epoch) is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F

from bilinear_lens.image.config import TrainConfig
from bilinear_lens.image.data import ImageData
from bilinear_lens.image.model import BilinearClassifier
from bilinear_lens.runs import RunError, load_state, require_finite_loss, rng_state, save_state, set_rng_state
from bilinear_lens.training.optim import adamw
from bilinear_lens.training.progress import progress_bar
from bilinear_lens.training.schedule import lr_factor


@dataclass
class TrainResult:
    history: List[Dict[str, float]]
    seconds: float
    resumed_from_epoch: int


@torch.no_grad()
def accuracy(model: BilinearClassifier, data: ImageData, batch_size: int = 4096) -> float:
    """Fraction of ``data`` classified correctly (eval mode, no noise)."""
    if len(data) == 0:
        raise ValueError("cannot compute accuracy on an empty dataset.")
    return float((model.predict(data.images, batch_size) == data.labels).float().mean())


def _save_checkpoint(prefix: Path, model: BilinearClassifier, opt: torch.optim.Optimizer, epoch: int,
                     history: List[Dict[str, float]], cfg: TrainConfig, gen: torch.Generator) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "history": history,
             "train_config": cfg.to_dict(), "model_config": model.cfg.to_dict(), "generator": gen.get_state(),
             "rng": rng_state()}
    save_state(prefix, state)


def _resume(prefix: Path, model: BilinearClassifier, opt: torch.optim.Optimizer, cfg: TrainConfig,
            gen: torch.Generator) -> Optional[tuple]:
    """``(epoch, history)`` restored from the checkpoint at ``prefix``, or None when there is none."""
    state = load_state(prefix)
    if state is None:
        return None
    where = f"{prefix}.safetensors/.json"
    try:
        if state["train_config"] != cfg.to_dict() or state["model_config"] != model.cfg.to_dict():
            raise RunError(f"checkpoint {where} was written with other settings; restart with --overwrite or "
                           "use another output folder.")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        set_rng_state(state["rng"])
        return int(state["epoch"]), list(state["history"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        if isinstance(err, RunError):
            raise
        raise RunError(f"checkpoint {where} is corrupt ({type(err).__name__}: {str(err).splitlines()[0][:100]}); "
                       "restart with --overwrite.") from err


def train(model: BilinearClassifier, train_data: ImageData, cfg: TrainConfig,
          test_data: Optional[ImageData] = None, checkpoint: Optional[Union[str, Path]] = None,
          progress: bool = True, on_checkpoint: Optional[Callable[[], None]] = None) -> TrainResult:
    """Train ``model`` in place for ``cfg.epochs`` epochs (resuming from ``checkpoint`` if present).

    ``checkpoint``: a path prefix (``<prefix>.safetensors`` + ``<prefix>.json`` are written after every
    epoch); ``on_checkpoint`` is called after each one is on disk. Returns the per-epoch history
    (``train_loss``, ``test_accuracy`` when ``test_data`` is given).
    """
    cfg.check()
    if len(train_data) == 0:
        raise ValueError("the training set is empty.")
    if train_data.images.shape[1] != model.cfg.d_input:
        raise ValueError(f"training images have {train_data.images.shape[1]} pixels but the model expects "
                         f"{model.cfg.d_input} ({model.cfg.image_size}x{model.cfg.image_size}).")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, cfg.lr, cfg.weight_decay, betas=(0.9, 0.999), split_decay=False, foreach=False)
    n = len(train_data)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    history: List[Dict[str, float]] = []
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    restored = _resume(ckpt_path, model, opt, cfg, gen) if ckpt_path is not None else None
    if restored is not None:
        start_epoch, history = restored
    t0 = time.perf_counter()
    bar = progress_bar(total, initial=start_epoch * steps_per_epoch, desc="train", enabled=progress, leave=False)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, count = 0.0, 0
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, total, cfg.warmup_steps)
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(train_data.images[idx]), train_data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            value = float(loss.detach())
            if not math.isfinite(value):
                bar.close()
                require_finite_loss(value, step + 1, f"the checkpoint of epoch {epoch}" if ckpt_path is not None
                                    and epoch > 0 else "nothing")
            opt.step()
            loss_sum += value * len(idx)
            count += len(idx)
            bar.update(1)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / count}
        if test_data is not None:
            record["test_accuracy"] = accuracy(model, test_data)
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, model, opt, epoch + 1, history, cfg, gen)
            if on_checkpoint is not None:
                on_checkpoint()
    bar.close()
    model.eval()
    return TrainResult(history, time.perf_counter() - t0, start_epoch)
