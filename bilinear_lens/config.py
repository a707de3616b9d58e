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

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from bilinear_lens.runs.checks import check_float, check_int, check_resume_overwrite
from bilinear_lens.runs.errors import RunError

C = TypeVar("C", bound="Config")
_MISSING = dataclasses.MISSING

__all__ = ["Config", "RunOptions", "add_arguments", "fields_of", "flag_name", "from_args", "nested", "option"]


def option(default: Any = _MISSING, help: str = "", *, minimum: Optional[float] = None,
           maximum: Optional[float] = None, inclusive: Union[bool, Tuple[bool, bool]] = True,
           choices: Optional[Sequence[Any]] = None, identity: bool = True, cli: bool = True,
           path: bool = False, aliases: Sequence[str] = (), required: bool = False,
           default_factory: Any = _MISSING) -> Any:
    """A dataclass field with its command-line and validation declaration.

    ``minimum``/``maximum``/``inclusive``: the range ``check()`` enforces (numbers); ``choices``: the
    allowed values; ``identity=False``: the field does not change what a run computes (``--out``,
    ``--threads``); ``cli=False``: no command-line flag (settings for tests or the Python API);
    ``path=True``: an existing path is recorded resolved in the identity; ``aliases``: older flag names
    still accepted (hidden from ``--help``); ``required=True``: ``None`` is refused (and the flag is
    required) although the field has a default.
    """
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "inclusive": inclusive,
            "choices": tuple(choices) if choices is not None else None, "identity": identity, "cli": cli,
            "path": path, "aliases": tuple(aliases), "required": required}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(cls: Type["Config"], factory: Optional[Callable[[], "Config"]] = None, *,
           identity: bool = True) -> Any:
    """A field holding another config (``factory``: its default, e.g. other defaults than ``cls()``)."""
    return option(default_factory=factory or cls, identity=identity)


def flag_name(name: str) -> str:
    """``--field-name`` for the field ``field_name``."""
    return "--" + name.replace("_", "-")


def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> Tuple[Any, bool]:
    """``(X, True)`` for ``Optional[X]``, else ``(tp, False)``."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


class Config:
    """Base of every settings dataclass (module docstring). Subclasses are ``@dataclass``es."""

    # -- validation -------------------------------------------------------------------------------
    def check(self: C) -> C:
        """Validate every field (its declared type, range, choices), nested configs, then ``_check()``;
        return ``self``. Errors are one-line :class:`RunError` naming the flag."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            tp, optional = _strip_optional(hints[f.name])
            if _is_config(tp):
                if value is not None:
                    value.check()
                continue
            _check_value(flag_name(f.name), value, tp, optional and not f.metadata.get("required"), f.metadata)
        self._check()
        return self

    def _check(self) -> None:
        """Rules that tie several fields together (override; raise :class:`RunError`)."""

    # -- dictionaries ------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Every field, nested configs as dicts, tuples as lists (JSON-ready)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: Type[C], data: Dict[str, Any]) -> C:
        """The config ``to_dict`` wrote (missing fields take their defaults; unknown keys are refused)."""
        if not isinstance(data, dict):
            raise RunError(f"{cls.__name__} settings must be a mapping, got {type(data).__name__}.")
        hints, names = _hints(cls), {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RunError(f"{cls.__name__} has no setting {unknown[0]!r}; known settings: "
                           f"{', '.join(sorted(names))}.")
        kw = {name: _from_plain(hints[name], value) for name, value in data.items()}
        try:
            return cls(**kw)
        except TypeError as e:
            raise RunError(f"{cls.__name__} settings are incomplete ({e}).") from e

    def identity(self) -> Dict[str, Any]:
        """What defines the run (``run.json``): every field but ``identity=False`` ones; nested
        configs recursively; existing ``path=True`` fields resolved."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.metadata.get("identity", True):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Config):
                out[f.name] = value.identity()
            elif f.metadata.get("path") and value is not None and Path(str(value)).expanduser().exists():
                out[f.name] = str(Path(str(value)).expanduser().resolve())
            else:
                out[f.name] = _plain(value)
        return out

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def flat(cls: Type[C], **values: Any) -> C:
        """The config with these leaf fields (their flag names, as on the command line: ``d_model=32``,
        ``lr=1e-3``, ``out="runs/x"``), nested configs filled in; every other field takes its default."""
        _refuse_unknown(cls, values)
        return _build(cls, values, {}, None, all_fields=True)

    def updated(self: C, **values: Any) -> C:
        """A copy with these leaf fields changed (flat names, as :meth:`flat`)."""
        _refuse_unknown(type(self), values)
        return _build(type(self), values, {}, self, all_fields=True)


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _from_plain(tp: Any, value: Any) -> Any:
    tp, _ = _strip_optional(tp)
    if value is None:
        return None
    if _is_config(tp):
        return tp.from_dict(value)
    origin = typing.get_origin(tp)
    if (origin is tuple or origin is typing.get_origin(Sequence[int]) or tp is tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _check_value(flag: str, value: Any, tp: Any, optional: bool, meta: Dict[str, Any]) -> None:
    """One field's declared type, range and choices (module docstring)."""
    if value is None:
        if optional:
            return
        raise RunError(f"{flag} is required.")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if tp is bool:
        if not isinstance(value, bool):
            raise RunError(f"{flag} must be true or false, got {value!r}.")
    elif tp is int:
        check_int(flag, value, lo, hi)
    elif tp is float:
        check_float(flag, value, lo, hi, inclusive=meta.get("inclusive", True))
    elif tp is str:
        if not isinstance(value, str):
            raise RunError(f"{flag} must be a string, got {value!r}.")
    elif typing.get_origin(tp) in (tuple, list, Sequence, typing.get_origin(Sequence[int])):
        (inner,) = set(typing.get_args(tp)) - {Ellipsis} or {Any}
        if not isinstance(value, (tuple, list)) or not value:
            raise RunError(f"{flag} needs at least one value, got {value!r}.")
        for v in value:
            _check_value(flag, v, inner, False, meta)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise RunError(f"{flag} must be one of {', '.join(map(str, choices))}; got {value!r}.")


# -- the command line ---------------------------------------------------------------------------
def _leaves(cls: type, default: Any = None) -> Iterator[Tuple[dataclasses.Field, Any, Any]]:
    """``(field, type, default)`` for every command-line field of ``cls``, nested configs flattened."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[f.name])
        if default is not None:
            value = getattr(default, f.name)
        elif f.default is not _MISSING:
            value = f.default
        elif f.default_factory is not _MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            value = _MISSING
        if _is_config(tp):
            yield from _leaves(tp, value)
        elif f.metadata.get("cli", True):
            yield f, hints[f.name], value


def _from_text(flag: str, tp: Any, text: str) -> Any:
    """A list (comma-separated) or mapping (JSON) flag's text as the field's value; one-line RunError."""
    base, _ = _strip_optional(tp)
    if typing.get_origin(base) is dict or base is dict:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise RunError(f"{flag} must be a JSON object, such as '{{\"l1_coefficient\": 5}}'; got {text!r}.")
        return value
    inner = [a for a in typing.get_args(base) if a is not Ellipsis][0]
    try:
        return tuple(inner(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise RunError(f"{flag} must be comma-separated {inner.__name__}s, such as 1,2,4; got {text!r}.") from None


def _is_text_typed(tp: Any) -> bool:
    """Fields whose flag takes text converted by :func:`_from_text` (lists of variable length, mappings)."""
    base, _ = _strip_optional(tp)
    origin = typing.get_origin(base)
    fixed_tuple = origin is tuple and Ellipsis not in typing.get_args(base) and typing.get_args(base)
    return (origin in (list, dict) or base is dict or origin is typing.get_origin(Sequence[int])
            or (origin is tuple and not fixed_tuple))


def _argument(parser: argparse.ArgumentParser, f: dataclasses.Field, tp: Any, default: Any,
              override: Dict[str, Any], aliases: Sequence[str] = ()) -> None:
    meta, flag = f.metadata, flag_name(f.name)
    base, _ = _strip_optional(tp)
    default = override.get(f.name, default)
    required = default is _MISSING or (default is None and meta.get("required", False))
    text = meta.get("help", "")
    names = [flag, *meta.get("aliases", ()), *aliases]
    kw: Dict[str, Any] = {"dest": f.name}
    if base is bool:
        if default is True:
            names[0] = flag_name("no_" + f.name)
            kw.update(action="store_false", help=text or f"turn off {f.name}")
        else:
            kw.update(action="store_true", help=text)
        parser.add_argument(names[0], default=bool(default), **kw)
        for alias in names[1:]:
            parser.add_argument(alias, **{**kw, "help": argparse.SUPPRESS})
        return
    origin = typing.get_origin(base)
    if _is_text_typed(base):
        dict_like = origin is dict or base is dict
        kw.update(type=str, metavar="JSON" if dict_like else
                  f"{[a for a in typing.get_args(base) if a is not Ellipsis][0].__name__.upper()},...")
    elif origin is tuple:
        kw.update(nargs=len(typing.get_args(base)), type=typing.get_args(base)[0])
    else:
        kw.update(type=base)
    if meta.get("choices") is not None:
        kw["choices"] = list(meta["choices"])
    if required:
        kw["required"] = True
    else:
        kw["default"] = default
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default
        if default is not None:
            text = f"{text} (default: {shown})" if text else f"default: {shown}"
    parser.add_argument(names[0], help=text.replace("%", "%%"), **kw)
    for alias in names[1:]:
        parser.add_argument(alias, help=argparse.SUPPRESS, **{k: v for k, v in kw.items() if k != "required"})


def add_arguments(parser: argparse.ArgumentParser, cls: Type[Config], *, exclude: Sequence[str] = (),
                  defaults: Optional[Dict[str, Any]] = None,
                  aliases: Optional[Dict[str, Sequence[str]]] = None) -> None:
    """One flag per command-line field of ``cls`` (nested configs flattened; module docstring).

    ``exclude``: fields the command sets itself; ``defaults``: other defaults for this command;
    ``aliases``: this command's older flag names of a field (hidden from ``--help``)."""
    seen: Dict[str, str] = {}
    for f, tp, default in _leaves(cls):
        if f.name in exclude:
            continue
        if f.name in seen:
            raise TypeError(f"{cls.__name__}: two fields are called {f.name!r}; flags must be unique.")
        seen[f.name] = f.name
        _argument(parser, f, tp, default, defaults or {}, (aliases or {}).get(f.name, ()))


def from_args(cls: Type[C], args: argparse.Namespace, **given: Any) -> C:
    """The config ``args`` describe (nested configs rebuilt from their flags); ``given`` overrides."""
    return _build(cls, vars(args), given)


def _build(cls: Type[C], values: Dict[str, Any], given: Dict[str, Any], default: Any = None,
           all_fields: bool = False) -> C:
    hints = _hints(cls)
    kw: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[f.name])
        if f.name in given:
            kw[f.name] = given[f.name]
        elif _is_config(tp):
            inner_default = getattr(default, f.name) if default is not None else (
                f.default_factory() if f.default_factory is not _MISSING else None)  # type: ignore[misc]
            kw[f.name] = _build(tp, values, given, inner_default, all_fields)
        elif f.name in values and (all_fields or f.metadata.get("cli", True)):
            value = values[f.name]
            if isinstance(value, str) and _is_text_typed(hints[f.name]):
                value = _from_text(flag_name(f.name), hints[f.name], value)
            kw[f.name] = value
        elif default is not None:
            kw[f.name] = getattr(default, f.name)
    return cls(**kw)


def _leaf_names(cls: type) -> List[str]:
    hints, names = _hints(cls), []
    for f in dataclasses.fields(cls):
        tp, _ = _strip_optional(hints[f.name])
        names.extend(_leaf_names(tp) if _is_config(tp) else [f.name])
    return names


def _refuse_unknown(cls: type, values: Dict[str, Any]) -> None:
    known = _leaf_names(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}.")


def fields_of(cls: Type[Config]) -> List[str]:
    """Every leaf field name of ``cls`` (nested configs flattened)."""
    return [f.name for f, _, _ in _leaves(cls)]


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
