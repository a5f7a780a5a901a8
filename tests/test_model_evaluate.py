"""Evaluation metrics: mAP@0.5 by the evaluation protocol (ignored boxes), range and velocity errors of matches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.detections import Detections  # noqa: E402
from perception.labels import CLASSES  # noqa: E402
from perception.model.evaluate import FrameResult, recall_by_height, score  # noqa: E402


def frame(gt: list[tuple[int, list[float], bool, float, tuple]], dets: list[tuple[int, list[float], float, float, tuple]]):
    """gt: (cls, box, ignore, range, velocity); dets: (cls, box, score, range, velocity). An ignored box is
    mostly occluded (outside every level but hard); images are 1242 px wide (KITTI's)."""
    d = Detections(np.zeros(len(dets), np.int32), np.array([x[0] for x in dets], np.int32),
                   np.array([x[2] for x in dets], np.float32), np.array([x[1] for x in dets], np.float32).reshape(-1, 4),
                   np.array([x[3] for x in dets], np.float32), np.array([x[4] for x in dets], np.float32).reshape(-1, 2))
    return FrameResult(d, np.array([g[1] for g in gt], np.float64).reshape(-1, 4), np.array([g[0] for g in gt]),
                       np.array([g[3] for g in gt], np.float64), np.array([g[4] for g in gt], np.float64).reshape(-1, 2),
                       np.array([0.7 if g[2] else 0.0 for g in gt]), np.zeros(len(gt)), np.ones(len(gt)), 1242)


CAR, PED = CLASSES.index("car"), CLASSES.index("pedestrian")
NAN2 = (math.nan, math.nan)


def test_perfect_detections_score_one_and_exact_errors():
    frames = [frame([(CAR, [10, 10, 60, 40], False, 20.0, (5.0, 0.0)), (PED, [100, 10, 110, 40], False, 8.0, NAN2)],
                    [(CAR, [10, 10, 60, 40], 0.9, 21.0, (8.0, 4.0)), (PED, [100, 10, 110, 40], 0.8, 8.0, (1.0, 1.0))])]
    r = score(frames, CLASSES)
    assert r.ap["car"] == pytest.approx(1.0) and r.ap["pedestrian"] == pytest.approx(1.0)
    assert math.isnan(r.ap["truck"]) and r.gt_counts == {"car": 1, "truck": 0, "pedestrian": 1, "cyclist": 0}
    assert r.mean_ap == pytest.approx(1.0)
    assert r.range_rel_error_median_under_40m == pytest.approx((0.05 + 0.0) / 2)
    assert r.velocity_error_median_px_s == pytest.approx(5.0)        # |(8,4)-(5,0)|; the pedestrian has no GT velocity
    assert r.matched == 2


def test_misses_false_positives_and_crowd_regions():
    gt = [(CAR, [10, 10, 60, 40], False, 20.0, NAN2), (CAR, [200, 10, 250, 40], False, 50.0, NAN2),
          (CAR, [300, 10, 340, 45], True, 90.0, NAN2)]                  # occluded: ignored
    dets = [(CAR, [10, 10, 60, 40], 0.9, 20.0, NAN2),                  # hit
            (CAR, [300, 10, 340, 45], 0.8, 90.0, NAN2),                # on the ignored box: neither hit nor FP
            (CAR, [400, 10, 450, 40], 0.7, 10.0, NAN2)]                # false positive
    r = score([frame(gt, dets)], CLASSES)
    # ranked: hit (P=1, R=.5), FP (P=.5) -> the second car is never found: AP = 0.5 over 101 recall points
    assert r.ap["car"] == pytest.approx(51 / 101, abs=1e-6)
    assert r.gt_counts["car"] == 2 and r.matched == 1
    assert r.range_rel_error_median == pytest.approx(0.0)
    # the hard level scores the occluded car: found, so hard mAP is above moderate's
    assert r.map_by_level["hard"] > r.map_by_level["moderate"] == pytest.approx(51 / 101, abs=1e-6)


def test_wrong_class_does_not_match_and_no_detections_give_zero():
    gt = [(CAR, [10, 10, 60, 40], False, 20.0, NAN2)]
    r = score([frame(gt, [(PED, [10, 10, 60, 40], 0.9, 20.0, NAN2)])], CLASSES)
    assert r.ap["car"] == 0.0 and r.matched == 0
    r = score([frame(gt, [])], CLASSES)
    assert r.ap["car"] == 0.0 and math.isnan(r.range_rel_error_median)


def test_recall_by_height_counts_found_and_labelled_boxes_per_bin():
    frames = [frame([(CAR, [0, 0, 40, 27], False, 10.0, NAN2),        # < 30 px: found at 0.5
                     (CAR, [100, 0, 140, 28], False, 10.0, NAN2),     # < 30 px: only a 0.2 detection
                     (CAR, [200, 0, 260, 45], False, 10.0, NAN2),     # 30-60 px: missed
                     (CAR, [300, 0, 400, 100], False, 10.0, NAN2),    # >= 60 px: found
                     (CAR, [500, 0, 600, 100], True, 10.0, NAN2),     # mostly occluded: not moderate, not counted
                     (PED, [700, 0, 720, 70], False, 10.0, NAN2)],    # >= 60 px: a car box on it does not count
                    [(CAR, [0, 0, 40, 27], 0.5, 10.0, NAN2), (CAR, [100, 0, 140, 28], 0.2, 10.0, NAN2),
                     (CAR, [300, 0, 400, 100], 0.9, 10.0, NAN2), (CAR, [700, 0, 720, 70], 0.9, 10.0, NAN2)])]
    r = recall_by_height(frames, CLASSES, min_score=0.3)
    assert r["car"] == {"<30": [1, 2], "30-60": [0, 1], ">=60": [1, 1]}
    assert r["pedestrian"] == {"<30": [0, 0], "30-60": [0, 0], ">=60": [0, 1]}
    assert recall_by_height(frames, CLASSES, min_score=0.1)["car"]["<30"] == [2, 2]
