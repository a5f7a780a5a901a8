"""Range, velocity and TTC errors of matched objects, by ground-truth distance band.

A detection matches a ground-truth box of its class (IoU >= min_iou, one to one, Hungarian); the box's id
gives the ground-truth object (position, velocity relative to the ego, size). Errors:
- range: reported range_m - hypot(x, y) of the object (m; signed, the bias);
- velocity: |reported - true| of the horizontal relative velocity (m/s);
- TTC: |min(reported, H) - min(true, H)| with H = ttc_horizon_s, over pairs where either is below H (s);
  the true TTC is gap / closing speed from the ego front bumper (replay.metrics.align.gap_and_ttc).
Median and 90th percentile of the absolute errors per band (each frame counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from replay.metrics.align import EvalImage, gap_and_ttc
from replay.metrics.config import DISTANCE_BANDS
from replay.metrics.matching import box_iou, match_boxes

QUANTITIES = ("range", "velocity", "ttc")


@dataclass(frozen=True)
class ErrorStats:
    count: int
    median: float   # of |error|
    p90: float      # of |error|
    bias: float     # median of the signed error (range only; NaN otherwise)


@dataclass(frozen=True)
class KinematicErrors:
    bands: tuple[tuple[float, float], ...]
    stats: dict[str, list[ErrorStats]]    # quantity -> one entry per band
    overall: dict[str, ErrorStats]
    true_range: dict[str, np.ndarray]     # quantity -> ground-truth range of each sample (m)
    error: dict[str, np.ndarray]          # quantity -> signed error (range) or |error| (velocity, ttc)


def evaluate_kinematics(images: Sequence[EvalImage], min_iou: float, ego_front_m: float,
                        ttc_horizon_s: float) -> KinematicErrors:
    samples: dict[str, tuple[list[float], list[float]]] = {q: ([], []) for q in QUANTITIES}
    for im in images:
        if not len(im.det) or not im.gt.boxes:
            continue
        gt_cls = im.gt_cls
        iou = box_iou(im.det.box, im.gt_boxes)
        rows, cols = match_boxes(iou, min_iou, im.det.cls[:, None] == gt_cls[None, :])
        objects = {o.id: o for o in im.gt.objects}
        for d, g in zip(rows, cols):
            obj = objects.get(im.gt.boxes[g].id)
            if obj is None:
                continue
            true_range = obj.range
            if math.isfinite(im.det.range_m[d]):
                _add(samples["range"], true_range, float(im.det.range_m[d]) - true_range)
            v = im.det.velocity[d, :2]
            if np.isfinite(v).all():
                _add(samples["velocity"], true_range, math.hypot(v[0] - obj.velocity[0], v[1] - obj.velocity[1]))
            true_ttc = min(gap_and_ttc(obj, ego_front_m)[1], ttc_horizon_s)
            ttc = im.det.ttc_s[d]
            if not math.isnan(ttc) and min(true_ttc, ttc) < ttc_horizon_s:
                _add(samples["ttc"], true_range, abs(min(float(ttc), ttc_horizon_s) - true_ttc))
    bands = tuple(zip(DISTANCE_BANDS[:-1], DISTANCE_BANDS[1:]))
    true_range = {q: np.array(samples[q][0]) for q in QUANTITIES}
    error = {q: np.array(samples[q][1]) for q in QUANTITIES}
    stats = {q: [_stats(error[q][(true_range[q] >= lo) & (true_range[q] < hi)], q == "range") for lo, hi in bands]
             for q in QUANTITIES}
    overall = {q: _stats(error[q], q == "range") for q in QUANTITIES}
    return KinematicErrors(bands, stats, overall, true_range, error)


def _add(sample: tuple[list[float], list[float]], true_range: float, error: float) -> None:
    sample[0].append(true_range)
    sample[1].append(error)


def _stats(errors: np.ndarray, signed: bool) -> ErrorStats:
    if not errors.size:
        return ErrorStats(0, math.nan, math.nan, math.nan)
    magnitude = np.abs(errors)
    return ErrorStats(int(errors.size), float(np.median(magnitude)), float(np.percentile(magnitude, 90)),
                      float(np.median(errors)) if signed else math.nan)
