"""The one evaluation protocol (perception/eval): AP against pycocotools with ignored boxes, difficulty
levels, invented objects per frame."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from perception.eval import (EASY, HARD, IOU_THRESHOLDS, LEVELS, MODERATE, ScoredFrame, evaluate_detections,
                             level_named, unmatched_per_frame)
from perception.errors import ConfigError

CLASSES = ("car", "truck", "pedestrian", "cyclist")
MIN_AREA = 900.0  # the ignore rule of the cross-check: COCOeval's area range [MIN_AREA, inf)


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def _random_frames(seed: int, n_frames: int = 40) -> list[ScoredFrame]:
    """Detections near and far from the labelled boxes, duplicates, score ties, a frame beyond 100 detections,
    small boxes on both sides (ignored by area), a class with detections only."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        g = int(rng.integers(0, 8))
        xy = rng.uniform(0, 500, (g, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 160, (g, 2))], axis=1)
        gt_cls = rng.choice([0, 2, 3], g)
        det, det_cls = [], []
        for b, c in zip(gt, gt_cls):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                box = b + rng.normal(0, 0.08 * (b[2] - b[0]), 4)
                det.append([*np.minimum(box[:2], box[2:]), *np.maximum(box[:2], box[2:])])
                det_cls.append(c if rng.random() > 0.1 else rng.integers(0, 4))
        extra = int(rng.integers(0, 4)) + (120 if i == 7 else 0)
        xy = rng.uniform(0, 500, (extra, 2))
        det += list(np.concatenate([xy, xy + rng.uniform(8, 160, (extra, 2))], axis=1))
        det_cls += list(rng.integers(0, 4, extra))
        det = np.array(det, np.float64).reshape(-1, 4)
        scores = np.round(rng.uniform(0.05, 1.0, len(det)), 2)  # rounded: ties across frames
        frames.append(ScoredFrame(det, np.array(det_cls, np.int64), scores, _area(det) < MIN_AREA,
                                  gt, gt_cls.astype(np.int64), _area(gt) < MIN_AREA))
    return frames


def _pycocotools_precision(frames: list[ScoredFrame]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [{"id": i + 1} for i in range(len(frames))],
          "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)], "annotations": []}
    results = []
    for i, f in enumerate(frames):
        for box, cls in zip(f.gt_box, f.gt_cls):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                      "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, cls, score in zip(f.det_box, f.det_cls, f.det_score):
            results.append({"image_id": i + 1, "category_id": int(cls) + 1, "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.areaRng = [[MIN_AREA, 1e10]]
        evaluator.params.areaRngLbl = ["big"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1]  # maxDets 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_with_ignored_boxes_equals_pycocotools(seed):
    frames = _random_frames(seed)
    assert sum(int(f.gt_ignore.sum()) for f in frames) > 5  # the ignore path is exercised
    ours = evaluate_detections(frames, CLASSES)
    theirs = _pycocotools_precision(frames)
    assert ours.gt_count[1] == 0 and ours.det_count[1] > 0  # a class with detections only: not in the mean
    np.testing.assert_allclose(ours.precision, theirs, atol=1e-6, rtol=0)
    for k in range(len(CLASSES)):
        valid = theirs[0, :, k] > -1
        expected50 = theirs[0, :, k][valid].mean() if valid.any() else math.nan
        assert ours.ap(k, 0) == pytest.approx(expected50, abs=1e-6, nan_ok=True)
    assert ours.map == pytest.approx(theirs[theirs > -1].mean(), abs=1e-6)
    assert 0.05 < ours.map < ours.map50 < 1.0


def _frame(gt, gt_ignore, det, det_scores, det_small=None) -> ScoredFrame:
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    det = np.asarray(det, np.float64).reshape(-1, 4)
    small = np.zeros(len(det), bool) if det_small is None else np.asarray(det_small)
    return ScoredFrame(det, np.zeros(len(det), np.int64), np.asarray(det_scores, np.float64), small,
                       gt, np.zeros(len(gt), np.int64), np.asarray(gt_ignore, bool))


def test_ignored_boxes_are_neither_hit_nor_miss():
    big, hidden = [0, 0, 100, 100], [200, 0, 300, 100]
    both_found = _frame([big, hidden], [False, True], [big, hidden], [0.9, 0.8])
    only_big = _frame([big, hidden], [False, True], [big], [0.9])
    counted = _frame([big, hidden], [False, False], [big], [0.9])
    assert evaluate_detections([both_found], CLASSES).ap(0, 0) == pytest.approx(1.0)
    assert evaluate_detections([only_big], CLASSES).ap(0, 0) == pytest.approx(1.0)
    assert evaluate_detections([counted], CLASSES).ap(0, 0) == pytest.approx(0.5, abs=0.01)
    # an unmatched detection below the level's height is ignored; one of scored size is a false positive
    stray = [400, 0, 420, 10]
    ignored = _frame([big], [False], [stray, big], [0.95, 0.9], det_small=[True, False])
    counted = _frame([big], [False], [stray, big], [0.95, 0.9], det_small=[False, False])
    assert evaluate_detections([ignored], CLASSES).ap(0, 0) == pytest.approx(1.0)
    assert evaluate_detections([counted], CLASSES).ap(0, 0) == pytest.approx(0.5, abs=0.01)
    assert IOU_THRESHOLDS[0] == 0.5 and len(IOU_THRESHOLDS) == 10


def test_levels_follow_kitti_and_scale_with_the_image_width():
    assert [level.name for level in LEVELS] == ["easy", "moderate", "hard"]
    assert level_named("hard") is HARD
    with pytest.raises(ConfigError, match="unknown level 'medium'"):
        level_named("medium")
    # 25 px on KITTI's 1242-px images: the same share of a 1920-px image
    assert MODERATE.min_height_px(1242) == pytest.approx(25.0) and EASY.min_height_px(1242) == pytest.approx(40.0)
    assert MODERATE.min_height_px(1920) == pytest.approx(25.0 * 1920 / 1242)
    boxes = np.array([[0, 0, 50, 30], [0, 0, 50, 60], [0, 0, 50, 60], [0, 0, 50, 60], [0, 0, 50, 10]], np.float64)
    occ = np.array([0.0, 0.0, 0.4, 0.7, 0.0])
    trunc = np.array([0.0, 0.2, 0.0, 0.0, 0.0])
    assert EASY.ignored(boxes, occ, trunc, 1242).tolist() == [True, True, True, True, True]
    assert MODERATE.ignored(boxes, occ, trunc, 1242).tolist() == [False, False, False, True, True]
    assert HARD.ignored(boxes, occ, trunc, 1242).tolist() == [False, False, False, False, True]
    assert MODERATE.ignored(boxes[:1], occ[:1], trunc[:1], 1242, visible=np.array([0.3])).tolist() == [True]
    # a harder level scores a superset of the easier level's boxes
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 800, (500, 2))
    random_boxes = np.concatenate([xy, xy + rng.uniform(2, 200, (500, 2))], axis=1)
    o, t = rng.uniform(0, 1, 500), rng.uniform(0, 1, 500)
    scored = [~level.ignored(random_boxes, o, t, 1280) for level in LEVELS]
    assert np.all(scored[0] <= scored[1]) and np.all(scored[1] <= scored[2]) and scored[0].sum() > 0


def test_built_frames_apply_the_level():
    f = ScoredFrame.build([[0, 0, 40, 12], [0, 0, 40, 80]], [0, 0], [0.9, 0.8], [[0, 0, 40, 12]], [0], [0.0],
                          [0.0], 960, MODERATE)
    assert f.det_out_of_range.tolist() == [True, False] and f.gt_ignore.tolist() == [True]


def test_unmatched_per_frame_counts_invented_objects():
    gt = [[0, 0, 100, 100]]
    frames = [_frame(gt, [False], [[0, 0, 100, 100], [500, 500, 600, 600], [10, 10, 90, 90]], [0.9, 0.8, 0.7]),
              _frame(np.zeros((0, 4)), [], [[0, 0, 10, 10]], [0.5]),
              _frame(gt, [True], [[0, 0, 100, 100]], [0.9])]  # on an ignored box: not invented
    assert unmatched_per_frame(frames) == pytest.approx(2 / 3)
    assert math.isnan(unmatched_per_frame([]))


def test_training_validation_and_the_replay_report_give_the_same_figures():
    """The issue's three-fold mismatch: the same detections scored by perception/model/evaluate.py and by
    replay/metrics (what `perception replay report` prints) must give the same AP at every level."""
    from perception.detections import Detections
    from perception.labels import CLASSES as LABELS, GroundTruth, GroundTruthBox
    from perception.model.evaluate import FrameResult, score
    from replay.metrics.align import EvalImage, ImageDetections
    from replay.metrics.detection import evaluate_levels

    rng = np.random.default_rng(7)
    width = 960
    results, images = [], []
    for i in range(30):
        g = int(rng.integers(1, 6))
        xy = rng.uniform(0, 700, (g, 2))
        gt = np.concatenate([xy, xy + rng.uniform(4, 120, (g, 2))], axis=1)
        cls = rng.integers(0, 4, g)
        occ, trunc = rng.choice([0.0, 0.3, 0.7, 0.95], g), rng.choice([0.0, 0.2, 0.4], g)
        keep = rng.random(g) < 0.8
        det = np.concatenate([gt[keep] + rng.normal(0, 3, (int(keep.sum()), 4)), gt[:1] + 300], axis=0)
        det = np.concatenate([np.minimum(det[:, :2], det[:, 2:]), np.maximum(det[:, :2], det[:, 2:])], axis=1)
        det_cls = np.concatenate([cls[keep], cls[:1]])
        det_score = rng.uniform(0.1, 1.0, len(det))
        n = len(det)
        dets = Detections(np.zeros(n, np.int32), det_cls.astype(np.int32), det_score.astype(np.float32),
                          det.astype(np.float32), np.full(n, np.nan, np.float32), np.full((n, 2), np.nan, np.float32))
        results.append(FrameResult(dets, gt, cls, np.full(g, np.nan), np.full((g, 2), np.nan), occ, trunc,
                                   np.ones(g), width))
        boxes = tuple(GroundTruthBox(k, LABELS[int(c)], tuple(map(float, b)), float(t), float(o))
                      for k, (b, c, o, t) in enumerate(zip(gt, cls, occ, trunc)))
        images.append(EvalImage("front", i, GroundTruth("front", i, boxes, (), 0.0),
                                ImageDetections(np.arange(n), det_cls.astype(np.int64), det_score.astype(np.float32)
                                                .astype(np.float64), det.astype(np.float32).astype(np.float64),
                                                np.full(n, np.nan), np.full((n, 3), np.nan), np.full(n, np.nan),
                                                np.zeros(n, bool)), i))
    trained = score(results, LABELS)
    reported = evaluate_levels(images, {"front": width})
    for level in LEVELS:
        assert trained.map_by_level[level.name] == pytest.approx(reported[level.name].map50, abs=1e-9)
    assert trained.map_by_level["easy"] != pytest.approx(trained.map_by_level["hard"])  # the levels differ here
