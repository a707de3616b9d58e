"""Settings of every command as nested dataclasses: one validation style, one way to the command line.

A command's settings are a dataclass deriving from :class:`Config`; each field is declared with
:func:`option`, which records its help text, its range or choices, and whether it defines the run::

    @dataclass
    class OptimConfig(Config):
        lr: float = option(3e-3, "peak learning rate", minimum=0, inclusive=(False, True))
        warmup: int = option(10, "linear warm-up steps", minimum=0)

    @dataclass
    class TrainConfig(Config):
        data: str = option(help="training text")                      # required
        optim: OptimConfig = nested(OptimConfig)                       # a config inside a config
        progress: bool = option(True, "progress bar", identity=False)  # --no-progress

The same name serves everywhere: field ``warmup`` is ``--warmup`` on the command line
(:func:`add_arguments` / :func:`from_args`), ``"warmup"`` in ``to_dict()`` and in ``run.json``'s identity
(``identity()``: every field but those declared ``identity=False``). Nested configs contribute their
fields' flags directly (``--lr``, not ``--optim-lr``), so a leaf name is unique within a command.

``check()`` validates every field against its declaration (one-line :class:`~bilinear_lens.runs.RunError`
naming the flag, its range and the value), recurses into nested configs, then calls ``_check()``, where a
config states rules that tie fields together. ``to_dict()`` / ``from_dict()`` round-trip exactly (tuples
included); ``from_dict`` refuses unknown keys by name.
"""

from bilinear_lens.config.base import Config, fields_of, flag_name, nested, option
from bilinear_lens.config.cli import add_arguments, from_args
from bilinear_lens.config.run import RunOptions

__all__ = ["Config", "RunOptions", "add_arguments", "fields_of", "flag_name", "from_args", "nested", "option"]
