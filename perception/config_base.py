"""Self-validating configuration dataclasses: every section of the node's configuration builds on these.

Each field is declared with `param(default, doc, unit=..., ge/gt/le/lt=...)`; construction checks types
and ranges (`ConfigBase.__post_init__`) and each class adds its cross-field rules in `check()`.
`from_dict(d, where)` rejects unknown keys and re-raises every problem as a `ConfigError` that names
`where.key` and the reason, e.g. `node.yaml: tracker.max_misses: must be >= 0, got -1`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import field, fields
from typing import Any, TypeVar

from perception.errors import ConfigError
from perception.yaml_io import brief

C = TypeVar("C", bound="ConfigBase")

_TYPES = {"float": float, "int": int, "bool": bool}
_BOUNDS = (("ge", ">=", operator.ge), ("gt", ">", operator.gt), ("le", "<=", operator.le), ("lt", "<", operator.lt))


def param(default: Any, doc: str, *, unit: str = "", ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None) -> Any:
    """A config field: default, one-line meaning, unit and allowed range (all shown in errors and docs)."""
    return field(default=default, metadata={"doc": doc, "unit": unit, "ge": ge, "gt": gt, "le": le, "lt": lt})


class _FieldError(ConfigError):
    def __init__(self, key: str, reason: str, owner: str = ""):
        super().__init__(f"{owner + '.' if owner else ''}{key}: {reason}")
        self.key = key
        self.reason = reason


class ConfigBase:
    """Mixin for frozen dataclasses whose fields are declared with `param`."""

    def __post_init__(self) -> None:
        try:
            for f in fields(self):  # type: ignore[arg-type]
                object.__setattr__(self, f.name, _checked(f.name, str(f.type), f.metadata, getattr(self, f.name)))
            self.check()
        except _FieldError as e:
            raise _FieldError(e.key, e.reason, type(self).__name__) from None

    def check(self) -> None:
        """Cross-field rules; raise `self.invalid(key, reason)`."""

    @staticmethod
    def invalid(key: str, reason: str) -> ConfigError:
        return _FieldError(key, reason)

    @classmethod
    def from_dict(cls: type[C], d: object, where: str) -> C:
        """Build from a parsed YAML/JSON mapping (missing keys take defaults); `where` prefixes errors."""
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: must be a mapping of settings, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        for key in d:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")
        try:
            return cls(**d)
        except _FieldError as e:
            raise ConfigError(f"{where}.{e.key}: {e.reason}") from None

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(key, default, unit, meaning) rows, for documentation tables."""
        return [(f.name, repr(f.default), f.metadata.get("unit", ""), f.metadata.get("doc", ""))
                for f in fields(cls)]  # type: ignore[arg-type]


def _checked(key: str, type_name: str, meta: Mapping[str, Any], value: Any) -> Any:
    kind = _TYPES[type_name]
    if kind is bool:
        if not isinstance(value, bool):
            raise _FieldError(key, f"must be true or false, got {brief(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(key, f"must be a number, got {brief(value)}")
    if kind is int:
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
