"""Run folders, atomic files, object-free training state and input checks: the contract every
command that writes follows (:mod:`bilinear_lens.runs.folder`)."""

from bilinear_lens.runs.atomic import (TMP_PREFIX, atomic_dir, atomic_file, remove_temporaries,
                                       save_tensors, write_json, write_text)
from bilinear_lens.runs.checks import (check_float, check_int, check_resume_overwrite, first_non_finite,
                                       require_finite, require_finite_loss)
from bilinear_lens.runs.errors import InjectedFailure, RunError
from bilinear_lens.runs.folder import RUN_FILE, RunFolder, check_out_path, differences, open_run, os_error
from bilinear_lens.runs.state import load_state, rng_state, save_state, set_rng_state

__all__ = [
    "InjectedFailure", "RUN_FILE", "RunError", "RunFolder", "TMP_PREFIX", "atomic_dir", "atomic_file", "check_float",
    "check_int", "check_resume_overwrite", "check_out_path", "differences", "first_non_finite", "load_state", "open_run",
    "os_error", "remove_temporaries", "require_finite", "require_finite_loss",
    "rng_state", "save_state", "save_tensors", "set_rng_state", "write_json", "write_text",
]
