"""The training spine every application shares: one language-model loop, schedules, optimiser, losses,
checkpoints, processes and progress.

* :mod:`~bilinear_lens.training.loop`: ``train(...)``, the loop of ``train-lm`` and ``convert``
  (``OptimConfig``, ``LoopConfig``, ``Job``);
* :mod:`~bilinear_lens.training.schedule`: learning-rate warm-up + cosine, the converter's gate annealing;
* :mod:`~bilinear_lens.training.optim`: AdamW with decay on matrices, frozen biases;
* :mod:`~bilinear_lens.training.losses`: next-token CE, distillation KL, validation loss;
* :mod:`~bilinear_lens.training.checkpoint`: resumable, object-free training state;
* :mod:`~bilinear_lens.training.parallel` / :mod:`~bilinear_lens.training.sharding`: one process, data
  parallel or FSDP2 behind one interface;
* :mod:`~bilinear_lens.training.speedups`: fused attention and gradient checkpointing while training;
* :mod:`~bilinear_lens.training.progress`: the progress bar.
"""

from bilinear_lens._lazy import lazy_getattr

_LAZY = {
    **{name: "bilinear_lens.training.loop" for name in
       ("Job", "Trained", "steps_for_tokens", "to_device", "train")},
    **{name: "bilinear_lens.training.config" for name in ("LoopConfig", "OptimConfig")},
    **{name: "bilinear_lens.training.schedule" for name in ("BetaSchedule", "LRSchedule", "lr_factor")},
    **{name: "bilinear_lens.training.optim" for name in ("adamw", "freeze_biases", "is_bias", "trainable")},
    **{name: "bilinear_lens.training.losses" for name in ("lm_loss", "next_token_ce", "validation_loss")},
    **{name: "bilinear_lens.training.checkpoint" for name in ("Counter", "load_checkpoint", "save_checkpoint")},
    **{name: "bilinear_lens.training.parallel" for name in ("Processes", "make_accelerator", "on_main")},
    **{name: "bilinear_lens.training.speedups" for name in
       ("enable_gradient_checkpointing", "restore_attention", "use_sdpa")},
    "progress_bar": "bilinear_lens.training.progress",
}
__getattr__ = lazy_getattr(__name__, _LAZY, globals())
__all__ = sorted(_LAZY)
