"""Latency from the diagnostics the node puts in every message: per-stage times and end to end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.io.run_file import RecordedMessage

TOTAL = "total"  # a stage the node may report itself; otherwise end to end = the sum of the stages


@dataclass(frozen=True)
class StageStats:
    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class LatencyMetrics:
    stages: dict[str, StageStats]        # per stage, in the order the node lists them, then TOTAL
    times_ms: dict[str, np.ndarray]      # per stage, one value per frame set that reported it
    frame_ns: dict[str, np.ndarray]      # the frame sets those values belong to
    health_ns: np.ndarray                # time of each health message
    health_p50_ms: np.ndarray            # the node's own capture -> publish latency, per health message
    health_p99_ms: np.ndarray


def stage_times_ms(detections: Sequence[RecordedMessage]) -> dict[str, np.ndarray]:
    """Stage name -> time in ms per frame set (frame sets that lack a stage are skipped for it); TOTAL is
    the node's own `total` stage when it reports one, else the sum of the stages of each frame set."""
    return {stage: times for stage, (times, _) in _stage_series(detections).items()}


def latency_metrics(detections: Sequence[RecordedMessage], health: Sequence[RecordedMessage]) -> LatencyMetrics:
    series = _stage_series(detections)
    stages = {name: StageStats(len(t), float(t.mean()), float(np.percentile(t, 50)), float(np.percentile(t, 99)),
                               float(t.max())) for name, (t, _) in series.items() if len(t)}
    return LatencyMetrics(stages, {k: v[0] for k, v in series.items()}, {k: v[1] for k, v in series.items()},
                          np.array([m.t_ns for m in health], np.int64),
                          np.array([m.message.latency_p50_ms for m in health], np.float64),
                          np.array([m.message.latency_p99_ms for m in health], np.float64))


def _stage_series(detections: Sequence[RecordedMessage]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    values: dict[str, list[float]] = {}
    times: dict[str, list[int]] = {}
    for recorded in detections:
        stage_ns = recorded.message.diag.stage_ns
        if not stage_ns:
            continue
        items = dict(stage_ns)
        items.setdefault(TOTAL, sum(v for k, v in stage_ns.items()))
        for name, ns in items.items():
            values.setdefault(name, []).append(ns / 1e6)
            times.setdefault(name, []).append(recorded.t_ns)
    ordered = [k for k in values if k != TOTAL] + ([TOTAL] if TOTAL in values else [])
    return {k: (np.array(values[k], np.float64), np.array(times[k], np.int64)) for k in ordered}
