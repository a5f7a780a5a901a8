"""Self-validating configuration dataclasses: every section of the node's configuration builds on these.

Each field is declared with `param(default, doc, unit=..., ge/gt/le/lt=..., choices=..., path=...)`, a
nested section with `section(Cls)`; construction checks types, ranges and choices
(`ConfigBase.__post_init__`) and each class adds its cross-field rules in `check()`. `from_dict(d, where,
base_dir)` rejects unknown keys, builds nested sections from their mappings, resolves `path=True` fields
against `base_dir`, and re-raises every problem as a `ConfigError` that names `where.key` and the reason,
e.g. `node.yaml.tracker.max_misses: must be >= 0, got -1`.

Field types (the annotation, as written): float, int, bool, str, `X | None` of those, `dict[str, str]`,
and `float | dict[str, float]` (one number or one per name; bounds apply to each).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any, TypeVar

from perception.errors import ConfigError
from perception.yaml_io import brief

C = TypeVar("C", bound="ConfigBase")

_SCALARS = {"float", "int", "bool", "str"}
_BOUNDS = (("ge", ">=", operator.ge), ("gt", ">", operator.gt), ("le", "<=", operator.le), ("lt", "<", operator.lt))


def param(default: Any, doc: str, *, unit: str = "", ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None, choices: tuple[str, ...] | None = None,
          path: bool = False) -> Any:
    """A config field: default, one-line meaning, unit, allowed range or choices (all shown in errors and
    docs). `path=True`: a file path, resolved against the configuration file's directory."""
    meta = {"doc": doc, "unit": unit, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "path": path}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type[ConfigBase], doc: str = "") -> Any:
    """A nested section (its own ConfigBase class), built from the sub-mapping of the same key."""
    return field(default_factory=cls, metadata={"section": cls, "doc": doc or (cls.__doc__ or "").split("\n")[0]})


class _FieldError(ConfigError):
    def __init__(self, key: str, reason: str, owner: str = ""):
        super().__init__(f"{owner + '.' if owner else ''}{key}: {reason}")
        self.key = key
        self.reason = reason


class ConfigBase:
    """Mixin for frozen dataclasses whose fields are declared with `param` / `section`."""

    def __post_init__(self) -> None:
        try:
            for f in fields(self):  # type: ignore[arg-type]
                value = getattr(self, f.name)
                if "section" in f.metadata:
                    if not isinstance(value, f.metadata["section"]):
                        raise _FieldError(f.name, f"must be a {f.metadata['section'].__name__}, got {brief(value)}")
                    continue
                object.__setattr__(self, f.name, _checked(f.name, str(f.type), f.metadata, value))
            self.check()
        except _FieldError as e:
            raise _FieldError(e.key, e.reason, type(self).__name__) from None

    def check(self) -> None:
        """Cross-field rules; raise `self.invalid(key, reason)`."""

    @staticmethod
    def invalid(key: str, reason: str) -> ConfigError:
        return _FieldError(key, reason)

    @classmethod
    def from_dict(cls: type[C], d: object, where: str, base_dir: Path | None = None) -> C:
        """Build from a parsed YAML/JSON mapping (missing keys take defaults); `where` prefixes errors;
        relative `path=True` values are resolved against `base_dir`."""
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: must be a mapping of settings, got {type(d).__name__}")
        by_name = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for key, value in d.items():
            f = by_name.get(key)
            if f is None:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(by_name)})")
            if "section" in f.metadata:
                value = f.metadata["section"].from_dict(value, f"{where}.{key}", base_dir)
            elif f.metadata.get("path") and isinstance(value, str) and value and base_dir is not None \
                    and not Path(value).is_absolute():
                value = str(base_dir / value)
            values[key] = value
        try:
            return cls(**values)
        except _FieldError as e:
            raise ConfigError(f"{where}.{e.key}: {e.reason}") from None

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(key, default, unit, meaning) rows, for documentation tables."""
        rows = []
        for f in fields(cls):  # type: ignore[arg-type]
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((f.name, repr(default), f.metadata.get("unit", ""), f.metadata.get("doc", "")))
        return rows


def _checked(key: str, type_name: str, meta: Mapping[str, Any], value: Any) -> Any:
    if type_name.endswith(" | None"):
        return None if value is None else _checked(key, type_name.removesuffix(" | None"), meta, value)
    if type_name == "dict[str, str]":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, (str, int))
                                                      and not isinstance(v, bool) for k, v in value.items()):
            raise _FieldError(key, f"must map names to strings, got {brief(value)}")
        return {k: str(v) for k, v in value.items()}
    if type_name == "float | dict[str, float]":
        if isinstance(value, Mapping):
            return {str(k): _checked(f"{key}.{k}", "float", meta, v) for k, v in value.items()}
        return _checked(key, "float", meta, value)
    if type_name not in _SCALARS:
        raise TypeError(f"config field {key}: unsupported type {type_name!r}")
    if type_name == "bool":
        if not isinstance(value, bool):
            raise _FieldError(key, f"must be true or false, got {brief(value)}")
        return value
    if type_name == "str":
        if not isinstance(value, str) or not value:
            what = "a file path" if meta.get("path") else "a non-empty string"
            raise _FieldError(key, f"must be {what}, got {brief(value)}")
        choices = meta.get("choices")
        if choices is not None and value not in choices:
            raise _FieldError(key, f"must be one of {', '.join(choices)}, got {brief(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(key, f"must be a number, got {brief(value)}")
    if type_name == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise _FieldError(key, f"must be an integer, got {brief(value)}")
            value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise _FieldError(key, f"must be finite, got {brief(value)}")
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    for bound, symbol, holds in _BOUNDS:
        limit = meta.get(bound)
        if limit is not None and not holds(value, limit):
            raise _FieldError(key, f"must be {symbol} {limit}{unit}, got {brief(value)}")
    return value
