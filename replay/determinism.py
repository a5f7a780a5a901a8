"""Determinism check: two replays of one drive with one model and config must publish the same messages.

Every field is compared bit for bit (numpy arrays by dtype, shape and bytes; floats by their IEEE bits, so
NaN equals NaN and 0.0 differs from -0.0), except the fields that measure wall time: `publish_ns`, the
stage timings `diag.stage_ns` and health's capture -> publish latencies. Message order, log time and seq
must match too.

    assert_runs_identical("run_a.mcap", "run_b.mcap")
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from perception.io.run_file import RecordedMessage, Run, as_run

# paths are "<topic>.<field>.<subfield>"; an entry without the topic applies to every topic
WALL_TIME_FIELDS = frozenset({"publish_ns", "diag.stage_ns", "health.latency_p50_ms", "health.latency_p99_ms"})


def run_differences(a: Run | str | Path, b: Run | str | Path, ignore: frozenset[str] = WALL_TIME_FIELDS,
                    limit: int = 20) -> list[str]:
    """Up to `limit` differences between the runs' messages, each naming topic, message and field."""
    a, b = as_run(a), as_run(b)
    found: list[str] = []
    for topic in ("detections", "hints", "health"):
        ma, mb = a.topic(topic), b.topic(topic)
        if len(ma) != len(mb):
            found.append(f"{topic}: {len(ma)} messages in {a.path.name}, {len(mb)} in {b.path.name}")
        for index, (x, y) in enumerate(zip(ma, mb)):
            for path, diff in _message_differences(topic, x, y, ignore):
                found.append(f"{topic}[{index}] (t_ns {x.t_ns}): {path}: {diff}")
                if len(found) >= limit:
                    return found
    return found[:limit]


def assert_runs_identical(a: Run | str | Path, b: Run | str | Path, ignore: frozenset[str] = WALL_TIME_FIELDS) -> None:
    """Raises AssertionError listing the first differences unless the runs' messages are identical."""
    differences = run_differences(a, b, ignore)
    if differences:
        raise AssertionError("runs differ (ignoring " + ", ".join(sorted(ignore)) + "):\n  " +
                             "\n  ".join(differences))


def _message_differences(topic: str, x: RecordedMessage, y: RecordedMessage,
                         ignore: frozenset[str]) -> Iterator[tuple[str, str]]:
    fields_x = dict(_flatten(topic, {"t_ns": x.t_ns, "seq": x.envelope.seq, "publish_ns": x.envelope.publish_ns,
                                     "": x.message}))
    fields_y = dict(_flatten(topic, {"t_ns": y.t_ns, "seq": y.envelope.seq, "publish_ns": y.envelope.publish_ns,
                                     "": y.message}))
    for path in fields_x.keys() | fields_y.keys():
        if path in ignore or path.split(".", 1)[1] in ignore:
            continue
        vx, vy = fields_x.get(path, "<absent>"), fields_y.get(path, "<absent>")
        if not _identical(vx, vy):
            yield path, f"{_show(vx)} != {_show(vy)}"


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict) and not prefix.endswith("stage_ns"):
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}" if key else prefix, item)
    else:
        yield prefix, value


def _identical(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                and x.shape == y.shape and x.tobytes() == y.tobytes())
    if isinstance(x, float) or isinstance(y, float):
        return (type(x) is type(y)) and struct.pack("<d", x) == struct.pack("<d", y)
    return type(x) is type(y) and x == y


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)} {np.array2string(value, threshold=8, precision=6)}"
    return repr(value)
