"""The paper's image sweeps: ``bilinear-lens mnist --sweep sizes|regularisation|adversarial [--quick]``.

Each sweep trains its members into one run folder (:func:`bilinear_lens.runs.open_run`, kind
``mnist-sweep-<name>``; default ``--out mnist-sweep-<name>``), measures them and writes ``metrics.json``,
``figures/*.png`` and ``index.html``. Finished members are reused with ``--resume``; a finished sweep
is verified and returned. See :mod:`.sizes`, :mod:`.regularisation`, :mod:`.adversarial`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from bilinear_lens.image.sweeps import adversarial, regularisation, sizes
from bilinear_lens.image.config import SweepOptions
from bilinear_lens.image.sweeps.common import Recipe, best_match_cosine, effective_rank, identity_of, load_split
from bilinear_lens.runs import RunError, open_run

SWEEPS = {"sizes": sizes, "regularisation": regularisation, "adversarial": adversarial}
OWNED = ("runs", "figures", "metrics.json", "index.html")

__all__ = ["SWEEPS", "Recipe", "SweepOptions", "best_match_cosine", "effective_rank", "run_sweep"]


def run_sweep(name: str, options: SweepOptions, recipe: Optional[Recipe] = None,
              settings: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Run (or continue, or return the finished) sweep ``name``; returns its metrics. ``recipe`` and
    ``settings`` replace the sweep's (full or ``--quick``) ones, e.g. for tiny runs in tests."""
    if name not in SWEEPS:
        raise RunError(f"unknown sweep {name!r}; choose one of {', '.join(SWEEPS)}.")
    module = SWEEPS[name]
    default_recipe, default_settings = module.setting(options.quick)
    recipe = recipe or default_recipe
    settings = {**default_settings, **(settings or {})}
    out = options.run.out or f"mnist-sweep-{name}" + ("-quick" if options.quick else "")
    options = options.updated(out=out).check()
    with options.run.torch_threads():
        return _run(name, module, recipe, settings, options, out)


def _run(name: str, module: Any, recipe: Any, settings: Dict[str, Any], options: SweepOptions,
         out: str) -> Dict[str, Any]:
    identity = identity_of(name, recipe, settings, options.data)
    with open_run(out, kind=f"mnist-sweep-{name}", identity=identity, resume=options.run.resume,
                  overwrite=options.run.overwrite, owned=OWNED, inputs=[options.data]) as run:
        if run.finished:
            metrics = json.loads(run.file("metrics.json").read_text())
            metrics["reused_finished_run"] = True
            return metrics
        t0 = time.perf_counter()
        split, source = load_split(options.data, recipe)
        metrics = module.compute(run, recipe, settings, split, source, options.run.progress)
        metrics.update(source=source, recipe=identity["recipe"], quick=options.quick,
                       seconds=time.perf_counter() - t0)
        run.write_json("metrics.json", metrics)
        module.index(run, metrics, metrics["seconds"])
        run.finish()
    metrics["out"] = str(out)
    return metrics
