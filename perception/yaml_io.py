"""Bounded YAML reading for every file a user or another system hands the node: node configuration,
calibration (all four formats), model cards, replay tolerances.

A file is read by bytes actually read (never trusting `st_size`), only when it is a regular file, and
decoded as strict UTF-8. The YAML is parsed by a SafeLoader that additionally refuses
- anchors and aliases (a 1 KB "billion laughs" would expand to gigabytes),
- nesting deeper than MAX_DEPTH (no RecursionError),
- every tag but the core ones (null, bool, int, float, str, seq, map; callers may add their own, e.g.
  OpenCV's `!!opencv-matrix`); plain scalars that look like dates stay strings,
- integers outside the signed 64-bit range and malformed explicitly tagged scalars (`!!int abc`).
Every problem is raised as the caller's error class (ConfigError, CalibrationError, ...) naming the file.
`brief(value)` is the one way to show a value from such a file in an error message: it is bounded.
"""

from __future__ import annotations

import os
import reprlib
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from perception.errors import PerceptionError

MAX_DEPTH = 64
MAX_INT = 2 ** 63
_CORE = "tag:yaml.org,2002:"
CORE_TAGS = frozenset(_CORE + t for t in ("null", "bool", "int", "float", "str", "seq", "map"))
_SHOWN_PATH_CHARS = 200
_BRIEF_CHARS = 120

_brief = reprlib.Repr()
_brief.maxstring = 60
_brief.maxother = 60
_brief.maxlist = _brief.maxtuple = _brief.maxdict = _brief.maxset = 6
_brief.maxlevel = 3
_brief.maxlong = 40


def brief(value: object) -> str:
    """A repr of `value` that is short whatever its size (for error messages)."""
    text = _brief.repr(value)
    return text if len(text) <= _BRIEF_CHARS else text[:_BRIEF_CHARS - 3] + "..."


def show_path(path: str | os.PathLike) -> str:
    text = os.fspath(path)
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= _SHOWN_PATH_CHARS else text[:_SHOWN_PATH_CHARS] + "..."


def read_limited(path: str | os.PathLike, max_bytes: int, error: type[PerceptionError], what: str = "file") -> bytes:
    """The bytes of a regular file of at most `max_bytes` (counted as read, not as the file claims);
    `what` names the kind of file in errors."""
    shown = show_path(path)
    if "\0" in os.fsdecode(os.fspath(path)):
        raise error(f"{shown!r}: the path contains a NUL byte")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not block the open
    except OSError as e:
        raise error(f"{shown}: cannot read {what}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise error(f"{shown}: cannot read {what}: {kind}")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise error(f"{shown}: cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise error(f"{shown}: larger than allowed (over the limit of {max_bytes} bytes)")
    return b"".join(chunks)


def decode_utf8(data: bytes, where: str, error: type[PerceptionError]) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    return text.removeprefix("\ufeff")


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader without anchors / aliases, deep nesting, non-core tags or unbounded integers."""

    allowed_tags: frozenset[str] = CORE_TAGS
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _CORE + "timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed",
                                event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node.tag not in self.allowed_tags:
            raise ConstructorError(None, None, f"tag {brief(node.tag)} is not allowed", node.start_mark)
        return node

    def construct_yaml_int(self, node: Any) -> int:
        try:
            value = super().construct_yaml_int(node)
        except ValueError:
            raise ConstructorError(None, None, f"not an integer: {brief(node.value)}", node.start_mark) from None
        if not -MAX_INT <= value < MAX_INT:
            raise ConstructorError(None, None, "integer outside the 64-bit range", node.start_mark)
        return value

    def construct_yaml_float(self, node: Any) -> float:
        try:
            return super().construct_yaml_float(node)
        except ValueError:
            raise ConstructorError(None, None, f"not a number: {brief(node.value)}", node.start_mark) from None

    def construct_yaml_bool(self, node: Any) -> bool:
        try:
            return super().construct_yaml_bool(node)
        except KeyError:
            raise ConstructorError(None, None, f"not true/false: {brief(node.value)}", node.start_mark) from None


_BoundedLoader.add_constructor(_CORE + "int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor(_CORE + "float", _BoundedLoader.construct_yaml_float)
_BoundedLoader.add_constructor(_CORE + "bool", _BoundedLoader.construct_yaml_bool)


def _loader_with(extra_tags: dict[str, Callable[[yaml.SafeLoader, Any], Any]]) -> type[_BoundedLoader]:
    if not extra_tags:
        return _BoundedLoader
    loader = type("_ExtendedLoader", (_BoundedLoader,), {"allowed_tags": CORE_TAGS | frozenset(extra_tags)})
    for tag, construct in extra_tags.items():
        loader.add_constructor(tag, construct)
    return loader


def parse_yaml(text: str, where: str, error: type[PerceptionError],
               extra_tags: dict[str, Callable[[yaml.SafeLoader, Any], Any]] | None = None) -> Any:
    """One YAML document from `text` under the limits above; `where` names the source in errors."""
    try:
        loader = _loader_with(extra_tags or {})(text)  # checks the characters of `text`
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:  # only reachable through a caller's constructor; the loader caps depth
        raise error(f"{where}: not valid YAML: nested too deeply") from None


def load_yaml(path: str | Path, max_bytes: int, error: type[PerceptionError],
              extra_tags: dict[str, Callable[[yaml.SafeLoader, Any], Any]] | None = None) -> Any:
    """Read (bounded) and parse one YAML file."""
    where = show_path(path)
    return parse_yaml(decode_utf8(read_limited(path, max_bytes, error), where, error), where, error, extra_tags)


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = e.problem or e.context or "invalid"
        return f"{problem[:200]}{where}"
    return str(e)[:200]


# ---- typed conversion of parsed values -----------------------------------------------------------------
def expect_str(value: Any, field: str, error: type[PerceptionError], where: str) -> str:
    if not isinstance(value, str):
        raise error(f"{where}: field {field!r}: expected a string, got {brief(value)}")
    return value


def expect_int(value: Any, field: str, error: type[PerceptionError], where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{where}: field {field!r}: expected an integer, got {brief(value)}")
    if minimum is not None and value < minimum:
        raise error(f"{where}: field {field!r}: must be >= {minimum}, got {value}")
    return value


def expect_float(value: Any, field: str, error: type[PerceptionError], where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where}: field {field!r}: expected a number, got {brief(value)}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise error(f"{where}: field {field!r}: must be finite, got {value}")
    return value
