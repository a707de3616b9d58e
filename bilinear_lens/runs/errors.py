"""The one error type of run folders and inputs: its message is one line naming the problem and the fix."""

from __future__ import annotations


class RunError(ValueError):
    """A refused run folder, a corrupt file, a bad option or non-finite numbers.

    A ``ValueError``, so the command line prints it as ``bilinear-lens CMD: error: <message>``
    and exits with code 1.
    """


class InjectedFailure(RuntimeError):
    """Raised on purpose in the middle of a training step (``fail_at_step``), to test resuming."""
