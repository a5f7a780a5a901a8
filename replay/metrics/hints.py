"""Brake-hint precision and recall against the ground truth.

For each hints message, the ground truth of the frames its frame set used (diag.capture_ns per camera;
objects of several cameras merged by id) gives the true lead: the object ahead of the ego front bumper
with |y| <= corridor_half_width_m and the smallest gap. The needed stage is `brake` when its TTC or gap
is below brake_ttc_s / brake_gap_m, else `prepare` below prepare_ttc_s / prepare_gap_m (the node's "on"
thresholds), else `none`.

Per stage (`brake`; `prepare` = prepare or brake), a need is a run of consecutive frame sets needing it, a
hint a run of frame sets showing it. A need is caught when a hint overlaps [start - early_s, end]; on
time when that hint started at most max_delay_s after the need started (delay < 0: early). A hint
overlapping no need within [start - early_s, end + release_s] is a false hint (a false brake).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from perception.labels import GroundTruth, GroundTruthObject
from replay.metrics.align import gap_and_ttc
from replay.metrics.config import MetricsConfig
from perception.io.run_file import RecordedMessage

STAGES = ("none", "prepare", "brake")


@dataclass(frozen=True)
class HintEvents:
    stage: str               # "brake", or "prepare" (prepare or brake)
    needed: int              # needs in the ground truth
    on_time: int             # caught no later than max_delay_s after they started
    late: int                # caught later
    fired: int               # hints shown
    false: int               # hints with no need near them
    delays_s: np.ndarray     # hint start - need start, per caught need

    @property
    def missed(self) -> int:
        return self.needed - self.on_time - self.late

    @property
    def recall(self) -> float:
        """Share of needs caught on time."""
        return self.on_time / self.needed if self.needed else math.nan

    @property
    def precision(self) -> float:
        return (self.fired - self.false) / self.fired if self.fired else math.nan


@dataclass(frozen=True)
class HintMetrics:
    stages: dict[str, HintEvents]
    confusion: np.ndarray    # [3, 3] frame sets: needed stage (rows) x hinted stage (columns), STAGES order
    t_ns: np.ndarray         # frame sets with ground truth
    needed: np.ndarray       # needed stage index per frame set
    hinted: np.ndarray       # hinted stage index per frame set
    true_ttc_s: np.ndarray   # ground-truth lead TTC (inf: none / not closing)
    true_gap_m: np.ndarray   # ground-truth lead gap (inf: no lead)


def evaluate_hints(hints: Sequence[RecordedMessage], ground_truth: Iterable[GroundTruth],
                   config: MetricsConfig) -> HintMetrics | None:
    labels = {(gt.camera, gt.t_ns): gt for gt in ground_truth}
    t_ns, needed, hinted, ttcs, gaps = [], [], [], [], []
    for recorded in hints:
        m = recorded.message
        used = [labels.get((camera, int(t))) for camera, t in zip(m.diag.cameras, m.diag.capture_ns)]
        used = [gt for gt in used if gt is not None]
        if not used:
            continue
        gap, ttc = _true_lead(used, config)
        t_ns.append(recorded.t_ns)
        ttcs.append(ttc)
        gaps.append(gap)
        needed.append(2 if ttc < config.brake_ttc_s or gap < config.brake_gap_m else
                      1 if ttc < config.prepare_ttc_s or gap < config.prepare_gap_m else 0)
        hinted.append(STAGES.index(m.brake))
    if not t_ns:
        return None
    t = np.array(t_ns, np.int64)
    need, hint = np.array(needed), np.array(hinted)
    confusion = np.zeros((3, 3), np.int64)
    np.add.at(confusion, (need, hint), 1)
    stages = {name: _events(name, t, need >= level, hint >= level, config)
              for name, level in (("brake", 2), ("prepare", 1))}
    return HintMetrics(stages, confusion, t, need, hint, np.array(ttcs), np.array(gaps))


def _true_lead(labels: Sequence[GroundTruth], config: MetricsConfig) -> tuple[float, float]:
    """(gap, TTC) of the true lead; (inf, inf) without one. The newest label of each object wins."""
    objects: dict[int, GroundTruthObject] = {}
    for gt in sorted(labels, key=lambda g: g.t_ns):
        for obj in gt.objects:
            objects[obj.id] = obj
    best = (math.inf, math.inf)
    for obj in objects.values():
        if abs(obj.position[1]) > config.corridor_half_width_m:
            continue
        gap, ttc = gap_and_ttc(obj, config.ego_front_m)
        if gap < best[0]:
            best = (gap, ttc)
    return best


def _runs(t: np.ndarray, on: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) time of each run of consecutive True frames."""
    runs, start = [], None
    for k, value in enumerate(on):
        if value and start is None:
            start = k
        if start is not None and (not value or k == len(on) - 1):
            end = k if value else k - 1
            runs.append((int(t[start]), int(t[end])))
            start = None
    return runs


def _events(stage: str, t: np.ndarray, need: np.ndarray, hint: np.ndarray, config: MetricsConfig) -> HintEvents:
    needs, hints = _runs(t, need), _runs(t, hint)
    early, release = round(config.early_s * 1e9), round(config.release_s * 1e9)
    on_time = late = 0
    delays = []
    for start, end in needs:
        caught = [h_start for h_start, h_end in hints if h_start <= end and h_end >= start - early]
        if not caught:
            continue
        delay = (min(caught) - start) / 1e9
        delays.append(delay)
        if delay <= config.max_delay_s:
            on_time += 1
        else:
            late += 1
    false = sum(1 for h_start, h_end in hints
                if not any(h_start <= end + release and h_end >= start - early for start, end in needs))
    return HintEvents(stage, len(needs), on_time, late, len(hints), false, np.array(delays))
