"""Command lines derived from configs: one flag per leaf field, the same name as the field.

    add_arguments(parser, LMTrainConfig)        --data, --d-model, --lr, ... (nested configs flattened)
    cfg = from_args(LMTrainConfig, args)        the config those flags describe
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Dict, Optional, Sequence, Type

from bilinear_lens.config.base import _MISSING, C, Config, _build, _is_text_typed, _leaves, _strip_optional, flag_name

__all__ = ["add_arguments", "from_args"]


def _argument(parser: argparse.ArgumentParser, f: dataclasses.Field, tp: Any, default: Any,
              override: Dict[str, Any], aliases: Sequence[str] = ()) -> None:
    meta, flag = f.metadata, flag_name(f.name)
    base, _ = _strip_optional(tp)
    default = override.get(f.name, default)
    required = default is _MISSING or (default is None and meta.get("required", False))
    text = meta.get("help", "")
    names = [flag, *meta.get("aliases", ()), *aliases]
    kw: Dict[str, Any] = {"dest": f.name}
    if base is bool and default is None:  # three states: unset, true, false
        kw.update(type=_true_or_false, metavar="true|false")
    elif base is bool:
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
    elif base is not bool:
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
    if meta.get("positional"):  # ``bilinear-lens import-model SRC``
        kw.pop("dest")
        kw.pop("required", None)
        parser.add_argument(f.name, help=text.replace("%", "%%"), metavar=f.name.upper(), **kw)
        return
    parser.add_argument(names[0], help=text.replace("%", "%%"), **kw)
    for alias in names[1:]:
        parser.add_argument(alias, help=argparse.SUPPRESS, **{k: v for k, v in kw.items() if k != "required"})


def _true_or_false(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
