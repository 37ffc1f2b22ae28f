"""Frozen dataclasses from YAML: strict loading, ``key=value`` overrides, dumping.

Any frozen dataclass whose fields are annotated with ``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Any`` or another
dataclass can be built from a mapping. Unknown keys and values of the wrong type raise
:class:`~unetseg.errors.ConfigError` naming the dotted key path (``"optim.lr"``).

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Optim:
...     lr: float = 0.01
...     name: str = "sgd"
>>> cfg = from_dict(Optim, apply_overrides({"name": "adam"}, ["lr=1e-3"]))
>>> cfg.lr, cfg.name
(0.001, 'adam')
>>> from_dict(Optim, {"lr": "fast"}, path="optim")
Traceback (most recent call last):
...
unetseg.errors.ConfigError: optim.lr: expected a number, got str 'fast'
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import atomic_path
from .errors import ConfigError

T = TypeVar("T")


def _where(path: str) -> str:
    return path or "<config>"


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp`` and convert it (lists to tuples etc.)."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(args, value, path)
    if origin is typing.Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{_where(path)}: expected one of {choices}, got {_describe(value)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path=path)
    if origin in (list, tuple, Iterable) or tp in (list, tuple):
        return _convert_sequence(tp, origin, args, value, path)
    if origin in (dict, Mapping) or tp is dict:
        return _convert_mapping(args, value, path)
    if tp in (bool, int, float, str):
        return _convert_scalar(tp, value, path)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{_where(path)}: unsupported value {_describe(value)} for type {tp!r}")


def _convert_union(args: tuple, value: Any, path: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{_where(path)}: may not be null")
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, path)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError(errors[0])
    raise ConfigError(f"{_where(path)}: invalid value {_describe(value)}")


def _convert_sequence(tp: Any, origin: Any, args: tuple, value: Any, path: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{_where(path)}: expected a list, got {_describe(value)}")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(f"{_where(path)}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    item = args[0] if args else Any
    items = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if (origin is tuple or tp is tuple) else items


def _convert_mapping(args: tuple, value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{_where(path)}: expected a mapping, got {_describe(value)}")
    vt = args[1] if len(args) == 2 else Any
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ConfigError(f"{_where(path)}: keys must be strings, got {_describe(k)}")
        out[k] = _convert(vt, v, f"{path}.{k}" if path else k)
    return out


def _convert_scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_where(path)}: expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{_where(path)}: expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept what float() accepts.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{_where(path)}: expected a number, got {_describe(value)}")
    if isinstance(value, str):
        return value
    raise ConfigError(f"{_where(path)}: expected a string, got {_describe(value)}")


def from_dict(cls: type[T], data: Any, *, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types are errors).

    Missing keys take the dataclass defaults; a field without a default must be present.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_where(path)}: expected a mapping of {cls.__name__} fields, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{key}: unknown key (expected one of: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required key is missing")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{_where(path)}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Plain YAML-ready data (dicts, lists, scalars) of a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into ``(["a", "b"], value)``; ``value`` is parsed as YAML.

    Examples
    --------
    >>> parse_override("optim.lr=1e-3")
    (['optim', 'lr'], 0.001)
    >>> parse_override("data.train=[a, b]")
    (['data', 'train'], ['a', 'b'])
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key such as optim.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from exc
    if isinstance(value, str):
        try:  # YAML 1.1 leaves "1e-3" a string; numbers are what a user means.
            value = float(value) if any(c in value for c in "eE.") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any] | None, overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key=value`` override applied (nested keys created)."""
    out = _deepcopy(dict(data or {}))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"--set {text}: {'.'.join(keys[: i + 1])} is not a section")
            node = nxt
        node[keys[-1]] = value
    return out


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, bad YAML or a non-mapping raise ConfigError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: config file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus ``key=value`` overrides.

    Errors name the file: ``"run.yaml: optim.lr: expected a number, got str 'x'"``.
    """
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from exc


def dump_yaml(data: Any) -> str:
    """YAML text of a dataclass tree or plain data (keys in field order)."""
    return yaml.safe_dump(to_dict(data), sort_keys=False, default_flow_style=None)


def dump_config(obj: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically; return the path."""
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(dump_yaml(obj), encoding="utf-8")
    return p
