"""The strict `key.path=value` parser for any frozen dataclass schema: a study's own config or the bundled one.

`build` makes an instance from a nested dict, `parse_override`/`nest_value` turn `--set` items into nested dicts
typed by the target field, `merge` layers them, `flatten` turns a nested dict into dotted keys. Every value is
type-checked; an unknown key or a bad value raises `ConfigError` naming the key and what is allowed. It imports
nothing of the package.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names it and the fix."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _one_of(value: str, key: str, choices) -> None:
    _check(value in choices, key, f"got {value!r}, expected one of {', '.join(map(repr, choices))}")


# --- strict building and overriding ---------------------------------------------------------


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotated type `tp`; ints widen to floats, lists to tuples."""
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, Mapping), key, f"expected a table of {sorted(_field_types(tp))}, got {value!r}")
        return _build(tp, value, prefix=key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # `x | tuple[x, ...]`: a list takes the tuple's arm
        one, many = _union_arms(tp)
        return _coerce(value, many if isinstance(value, (list, tuple)) else one, key)
    if origin is tuple:
        args = typing.get_args(tp)
        if args[1:] == (Ellipsis,):
            _check(isinstance(value, (list, tuple)), key, f"expected a list, got {value!r}")
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        _check(
            isinstance(value, (list, tuple)) and len(value) == len(args),
            key,
            f"expected {len(args)} values, got {value!r}",
        )
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected a number, got {value!r}"
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # pragma: no cover - programming error


def _union_arms(tp: Any) -> tuple[Any, Any]:
    """`(scalar, tuple)` arms of a `scalar | tuple[scalar, ...]` field type."""
    arms = typing.get_args(tp)
    many = [a for a in arms if typing.get_origin(a) is tuple]
    one = [a for a in arms if typing.get_origin(a) is not tuple]
    if len(many) != 1 or len(one) != 1:  # pragma: no cover - programming error
        raise TypeError(f"unsupported config union {tp!r}: expected `scalar | tuple[scalar, ...]`")
    return one[0], many[0]


def _build(cls, d: Mapping[str, Any], prefix: str):
    types_ = _field_types(cls)
    unknown = sorted(set(d) - set(types_))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(prefix + k for k in types_)}")
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into a copy of `base` (tables merge, values replace)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_scalar(text: str, tp: Any, key: str) -> Any:
    """Parse the right-hand side of `--set key=value` for a field of type `tp`."""
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # `3` or a list `[3,1,5]` / `3,1,5`
        one, many = _union_arms(tp)
        is_list = text.strip().startswith(("[", "(")) or "," in text
        try:
            return _parse_scalar(text, many if is_list else one, key)
        except ConfigError:
            raise ConfigError(f"{key}: expected a number or a list of numbers like [3,1,5], got {text!r}") from None
    if typing.get_origin(tp) is tuple:
        parts = [p.strip() for p in text.strip("()[] ").split(",")]
        args = typing.get_args(tp)
        if args[1:] == (Ellipsis,):  # any length; `[]` is the empty list (the schema says whether it may be)
            return [_parse_scalar(p, args[0], key) for p in parts] if parts != [""] else []
        if len(parts) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} comma-separated values, got {text!r}")
        return [_parse_scalar(p, a, key) for p, a in zip(parts, args)]
    return text


def parse_override(item: str, schema: Any) -> dict[str, Any]:
    """`"training.lr=1e-4"` -> `{"training": {"lr": 1e-4}}`, typed by the target field of the dataclass type
    `schema`."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. training.lr=1e-4")
    key, text = item.split("=", 1)
    return nest_value(key.strip(), text.strip(), schema, item)


def field_type(key: str, schema: Any, item: str | None = None) -> Any:
    """The annotated type of the field `key` (a dotted path) of the dataclass type `schema`; `ConfigError` naming
    the valid keys when there is no such field or it is a table."""
    item = item or key
    parts = key.split(".")
    cls: Any = schema
    for i, part in enumerate(parts):
        types_ = _field_types(cls)
        prefix = ".".join(parts[:i])
        if part not in types_:
            where = f"under {prefix}" if prefix else "at the top level"
            valid = ", ".join((prefix + "." if prefix else "") + k for k in types_)
            raise ConfigError(f"--set {item!r}: unknown key {key!r} (valid keys {where}: {valid})")
        tp = types_[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a table")
            cls = tp
        elif dataclasses.is_dataclass(tp):
            first = next(iter(_field_types(tp)))
            raise ConfigError(f"--set {item!r}: {key} is a table; set one of its keys, e.g. {key}.{first}=...")
    return tp


def nest_value(key: str, value: Any, schema: Any, item: str | None = None) -> dict[str, Any]:
    """`("training.lr", "1e-4")` -> `{"training": {"lr": 1e-4}}`: a string is parsed as `--set` parses it for
    the field's type; any other value is kept (and checked when the config is built)."""
    tp = field_type(key, schema, item)
    if isinstance(value, str):
        value = _parse_scalar(value, tp, key)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def build(schema: Any, d: Mapping[str, Any]):
    """An instance of the dataclass type `schema` from a nested dict; unknown keys and wrong types raise
    `ConfigError` naming the key."""
    return _build(schema, d, prefix="")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def changed(a: Mapping[str, Any], b: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested config dicts: `{key: (a_value, b_value)}` (a key
    missing from `b` counts as None there)."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa[k], fb.get(k)) for k in fa if fa[k] != fb.get(k) and k not in ignore}
