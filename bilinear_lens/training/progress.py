"""The progress bar of every long job: tqdm, off with ``--no-progress`` (and on all but the main process).

    bar = progress_bar(total_steps, initial=step, desc="train-lm", enabled=cfg.progress)
    bar.update(1); bar.set_postfix(loss="3.21"); bar.close()
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int, *, initial: int = 0, desc: str = "", enabled: bool = True, unit: str = "step",
                 leave: bool = True) -> Any:
    """A tqdm bar over ``total`` units (rate and ETA shown), disabled when ``enabled`` is false."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, leave=leave,
                dynamic_ncols=True)
