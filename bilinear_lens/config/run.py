"""The run options every command shares (never part of a run's identity)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from bilinear_lens.config.base import Config, option
from bilinear_lens.runs.checks import check_resume_overwrite

__all__ = ["RunOptions"]


@dataclass
class RunOptions(Config):
    """How a command uses its run folder and the machine (never part of a run's identity)."""

    out: Optional[str] = option(None, "run folder: new, empty, or a run of the same command", required=True)
    resume: bool = option(False, "continue the run in --out from its last checkpoint (a finished run is verified "
                          "and returned)")
    overwrite: bool = option(False, "replace the run in --out (the old one is kept until the new one has its first "
                             "checkpoint)")
    progress: bool = option(True, "no progress bars")
    threads: Optional[int] = option(1, "torch CPU threads (0: torch's default; 1 is fastest on a shared machine)",
                                    minimum=0)

    def _check(self) -> None:
        check_resume_overwrite(self.resume, self.overwrite)

    @contextmanager
    def torch_threads(self) -> Iterator[None]:
        """``torch.set_num_threads(threads)`` for the block (0/None: unchanged), then the caller's setting."""
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)
