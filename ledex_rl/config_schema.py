"""Build typed, frozen dataclass configs from plain dicts, with one-line errors.

Kept apart from the config classes so that `config.py` reads as a list of settings. The builder
walks the dataclass type hints; every problem it finds names the full dotted key and what is accepted.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from ledex_rl.errors import UserError


class ConfigError(UserError, ValueError):
    """A bad config key or value. The message is one line that names the key and the fix."""


def build(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass `cls` from the mapping `data`, checking every key and type."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = _join(path, str(unknown[0]))
        raise ConfigError(f"unknown config key '{key}'; accepted keys{' under ' + path if path else ''}: {', '.join(sorted(fields))}")
    kwargs = {name: convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check (and lightly coerce: int -> float, list -> tuple) one value against a type hint."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if len(errors) == 1 else f"{path}: expected {_name(tp)}, got {_show(value)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {_show(value)} is not accepted; accepted values: {', '.join(map(str, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        return tuple(convert(item_tp, item, f"{path}.{i}") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        key_tp, val_tp = get_args(tp)
        return {convert(key_tp, k, path): convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {_show(value)}")
    raise ConfigError(f"{path}: unsupported config type {_name(tp)}")  # a bug in config.py, not user input


def to_dict(obj: Any) -> Any:
    """The inverse of `build`: plain dicts and lists, ready for YAML."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_override(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.0.c = value` inside nested dicts and lists, creating dicts on the way."""
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        here = ".".join(keys[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, key, here)]
            continue
        nxt = node.get(key)
        if nxt is None:
            nxt = {}
            node[key] = nxt
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"override '{dotted}': '{here}' is a single value, not a section")
        node = nxt
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, dotted)] = value
    else:
        node[last] = value


def _index(node: list, key: str, path: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override '{path}': list index must be 0..{len(node) - 1}, got '{key}'")
    return int(key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
