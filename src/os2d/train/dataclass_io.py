"""Frozen-dataclass configs <-> plain dicts (YAML/JSON), with type checks and dotted ``key=value`` overrides.

Every error names the offending key by its dotted path (``sampler.batch_size``) and, for an unknown key,
suggests the closest valid one, so a typo in a YAML file or on the command line never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema (the message names the dotted key)."""


def config_to_dict(obj: Any) -> Any:
    """A dataclass (nested) -> plain dicts/lists/scalars; tuples become lists, paths strings (YAML/JSON-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp`` (dataclasses recurse)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: may not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{where}: {value!r} fits none of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return config_from_dict(tp, value, where=where)
    if origin in (tuple, list) or tp in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value  # an annotation this loader does not know: passed through unchanged


def _unknown_key_error(cls: type, key: str, where: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {_join(where, close[0])!r}?" if close else ""
    return ConfigError(f"unknown config key {_join(where, key)!r}{hint} (valid keys"
                       f"{' under ' + repr(where) if where else ''}: {', '.join(names)})")


def config_from_dict(cls: type, data: Mapping[str, Any] | None, *, where: str = "") -> Any:
    """Build dataclass ``cls`` from a (partial) mapping; missing fields take their defaults.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or the dataclass's own validation failing
            (the message names the dotted key).
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise _unknown_key_error(cls, str(key), where)
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints.get(name, Any), _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {_join(where, name)!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"sampler.batch_size=2"`` -> (["sampler", "batch_size"], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE (e.g. sampler.batch_size=2)")
    key, raw = text.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if not all(path):
        raise ConfigError(f"override {text!r}: empty key component")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from e
    return path, value


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls).get(name, Any)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside an annotation (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


def apply_overrides(cls: type, data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to the plain-dict form of a ``cls`` config (keys checked against ``cls``)."""
    out: dict[str, Any] = _deep_copy(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        node, node_cls, where = out, cls, ""
        for i, key in enumerate(path):
            if node_cls is not None and key not in {f.name for f in dataclasses.fields(node_cls)}:
                raise ConfigError(f"override {text!r}: {_unknown_key_error(node_cls, key, where)}")
            if i == len(path) - 1:
                node[key] = value
                break
            child_cls = _dataclass_in(_field_type(node_cls, key)) if node_cls is not None else None
            if node_cls is not None and child_cls is None:
                raise ConfigError(f"override {text!r}: {_join(where, key)!r} is a value, not a section")
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node, node_cls, where = node[key], child_cls, _join(where, key)
    return out


def config_with_overrides(cls: type, data: Mapping[str, Any], overrides: Sequence[str] = ()) -> Any:
    """A ``cls`` config from its plain-dict form plus ``key=value`` overrides (``ConfigError`` names a bad key);
    ``data`` is e.g. :func:`load_yaml_mapping` of a file or the ``config`` entry of a checkpoint."""
    return config_from_dict(cls, apply_overrides(cls, data, overrides))


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping (empty file -> {})."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections, got {type(data).__name__}")
    return data


__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_with_overrides",
    "load_yaml_mapping",
    "parse_override",
]
