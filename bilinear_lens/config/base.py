"""The base of every settings dataclass: :func:`option` declarations, :class:`Config` (validation,
dictionaries, identity, flat access by flag name). See :mod:`bilinear_lens.config`."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from bilinear_lens.runs.checks import check_float, check_int
from bilinear_lens.runs.errors import RunError

C = TypeVar("C", bound="Config")
_MISSING = dataclasses.MISSING

__all__ = ["C", "Config", "fields_of", "flag_name", "nested", "option"]


def option(default: Any = _MISSING, help: str = "", *, minimum: Optional[float] = None,
           maximum: Optional[float] = None, inclusive: Union[bool, Tuple[bool, bool]] = True,
           choices: Optional[Sequence[Any]] = None, identity: bool = True, cli: bool = True,
           path: bool = False, aliases: Sequence[str] = (), required: bool = False, positional: bool = False,
           default_factory: Any = _MISSING) -> Any:
    """A dataclass field with its command-line and validation declaration.

    ``minimum``/``maximum``/``inclusive``: the range ``check()`` enforces (numbers); ``choices``: the
    allowed values; ``identity=False``: the field does not change what a run computes (``--out``,
    ``--threads``); ``cli=False``: no command-line flag (settings for tests or the Python API);
    ``path=True``: an existing path is recorded resolved in the identity; ``aliases``: older flag names
    still accepted (hidden from ``--help``); ``required=True``: ``None`` is refused (and the flag is
    required) although the field has a default; ``positional=True``: a positional argument, not a flag.
    """
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "inclusive": inclusive,
            "choices": tuple(choices) if choices is not None else None, "identity": identity, "cli": cli,
            "path": path, "aliases": tuple(aliases), "required": required,
            "positional": positional}
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

