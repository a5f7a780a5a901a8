"""Replay metrics: detection mAP against pycocotools, tracking against py-motmetrics, and the metrics of a
recorded run against its labelled drive."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from perception.labels import CLASSES, GroundTruth, GroundTruthBox
from replay.metrics import MetricsConfig, evaluate_run, ground_truth_for
from replay.metrics.align import EvalImage, ImageDetections
from replay.metrics.config import DISTANCE_BANDS
from replay.metrics.detection import IOU_THRESHOLDS, evaluate_detections
from replay.metrics.hints import _events
from replay.metrics.tracking import evaluate_tracking
from perception.io.run_file import load_run
from tests.test_replay_support import T0, record, simulated_outputs, small_rig, write_drive


def _image(camera: str, t_ns: int, gt_boxes, gt_cls, gt_ids, det_boxes, det_cls, det_scores, det_ids) -> EvalImage:
    n = len(det_boxes)
    gt = GroundTruth(camera, t_ns, tuple(GroundTruthBox(int(i), CLASSES[int(c)], tuple(map(float, b)), 0.0, 0.0)
                                         for b, c, i in zip(gt_boxes, gt_cls, gt_ids)), (), 0.0)
    det = ImageDetections(np.asarray(det_ids, np.int64).reshape(n), np.asarray(det_cls, np.int64).reshape(n),
                          np.asarray(det_scores, np.float64).reshape(n), np.asarray(det_boxes, np.float64).reshape(n, 4),
                          np.full(n, np.nan), np.full((n, 3), np.nan), np.full(n, np.nan), np.zeros(n, bool))
    return EvalImage(camera, t_ns, gt, det, t_ns)


def _random_boxes(rng, n, size=640.0):
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(8, size * 0.25, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _random_detection_images(seed: int, n_images: int = 40) -> list[EvalImage]:
    """Detections near (and far from) the ground truth, over-detections, duplicates, score ties, an image
    beyond 100 detections; class 1 (truck) has detections but no ground truth."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        g = rng.integers(0, 8)
        gt_boxes = _random_boxes(rng, g)
        gt_cls = rng.choice([0, 2, 3], g)
        det_boxes, det_cls = [], []
        for b, c in zip(gt_boxes, gt_cls):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                box = b + rng.normal(0, 0.08 * (b[2] - b[0]), 4)
                det_boxes.append([*np.minimum(box[:2], box[2:]), *np.maximum(box[:2], box[2:])])
                det_cls.append(c if rng.random() > 0.1 else rng.integers(0, 4))
        extra = rng.integers(0, 4) + (120 if i == 7 else 0)
        det_boxes += list(_random_boxes(rng, extra))
        det_cls += list(rng.integers(0, 4, extra))
        scores = np.round(rng.uniform(0.05, 1.0, len(det_boxes)), 2)  # rounded: ties across images
        images.append(_image("front", T0 + i, gt_boxes, gt_cls, np.arange(g) + 1, det_boxes, det_cls, scores,
                             np.arange(len(det_boxes))))
    return images


def _pycocotools_precision(images: list[EvalImage]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [{"id": i + 1} for i in range(len(images))],
          "categories": [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)], "annotations": []}
    results = []
    for i, im in enumerate(images):
        for box, cls in zip(im.gt_boxes, im.gt_cls):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                      "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, cls, score in zip(im.det.box, im.det.cls, im.det.score):
            results.append({"image_id": i + 1, "category_id": int(cls) + 1, "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, :, 0, -1]  # area "all", maxDets 100


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools(seed):
    images = _random_detection_images(seed)
    ours = evaluate_detections(images, CLASSES)
    theirs = _pycocotools_precision(images)
    assert ours.gt_count[1] == 0 and ours.det_count[1] > 0  # a class with detections only: not in the mean
    np.testing.assert_allclose(ours.precision, theirs, atol=1e-6, rtol=0)
    for k in range(len(CLASSES)):
        valid = theirs[:, :, k] > -1
        expected = theirs[:, :, k][valid].mean() if valid.any() else math.nan
        assert ours.ap(k) == pytest.approx(expected, abs=1e-6, nan_ok=True)
        expected50 = theirs[0, :, k][theirs[0, :, k] > -1].mean() if valid.any() else math.nan
        assert ours.ap(k, 0) == pytest.approx(expected50, abs=1e-6, nan_ok=True)
    assert ours.map == pytest.approx(theirs[theirs > -1].mean(), abs=1e-6)
    assert ours.map50 == pytest.approx(theirs[0][theirs[0] > -1].mean(), abs=1e-6)
    assert 0.05 < ours.map < ours.map50 < 1.0


def test_map_perfect_and_empty_cases():
    boxes = np.array([[10, 10, 50, 60], [100, 100, 180, 150]], float)
    perfect = [_image("front", T0, boxes, [0, 2], [1, 2], boxes, [0, 2], [0.9, 0.8], [1, 2])]
    result = evaluate_detections(perfect, CLASSES)
    assert result.map == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert math.isnan(result.ap(1)) and math.isnan(result.ap(3))
    missed = [_image("front", T0, boxes, [0, 2], [1, 2], np.zeros((0, 4)), [], [], [])]
    result = evaluate_detections(missed, CLASSES)
    assert result.map == 0.0 and result.map50 == 0.0 and list(result.recall[:, 0]) == [0.0] * 10
    assert IOU_THRESHOLDS[0] == 0.5 and len(IOU_THRESHOLDS) == 10


def _random_tracking_images(seed: int, cameras=("front", "rear"), frames: int = 60) -> list[EvalImage]:
    """Objects moving through the image; tracks that jitter, miss, swap ids between crossing objects, get
    re-numbered, and false tracks."""
    rng = np.random.default_rng(seed)
    images = []
    for camera in cameras:
        n = 6
        start = rng.uniform(0, 500, (n, 2))
        velocity = rng.uniform(-6, 6, (n, 2))
        size = rng.uniform(30, 90, (n, 2))
        alive = [(rng.integers(0, frames // 2), rng.integers(frames // 2, frames)) for _ in range(n)]
        track_of = {i: 100 + i for i in range(n)}
        for f in range(frames):
            if f in (20, 40):  # two objects swap their track ids; one gets a new track id
                a, b = rng.choice(n, 2, replace=False)
                track_of[a], track_of[b] = track_of[b], track_of[a]
                track_of[int(rng.integers(0, n))] = 1000 + f
            ids = [i for i in range(n) if alive[i][0] <= f <= alive[i][1]]
            boxes = np.array([[*(start[i] + velocity[i] * f), *(start[i] + velocity[i] * f + size[i])] for i in ids])
            det_boxes, det_ids = [], []
            for i, box in zip(ids, boxes):
                if rng.random() < 0.1:
                    continue
                det_boxes.append(box + rng.normal(0, 0.12 * size[i].mean(), 4))
                det_ids.append(track_of[i])
            if rng.random() < 0.3:
                det_boxes.append(_random_boxes(rng, 1)[0])
                det_ids.append(5000 + f)
            images.append(_image(camera, T0 + f * 100_000_000, boxes.reshape(-1, 4), [0] * len(ids),
                                 np.array(ids) + 1, np.array(det_boxes).reshape(-1, 4), [0] * len(det_ids),
                                 [0.9] * len(det_ids), det_ids))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracking_equals_motmetrics(seed):
    import motmetrics as mm
    from pycocotools import mask as coco_mask

    images = _random_tracking_images(seed)
    ours = evaluate_tracking(images, min_iou=0.5)
    accumulators, names = [], []
    for camera in ("front", "rear"):
        acc = mm.MOTAccumulator(auto_id=True)
        for im in (im for im in images if im.camera == camera):
            def xywh(b):
                return [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in b]
            if len(im.gt.boxes) and len(im.det):  # IoU by pycocotools, independent of ours
                distance = 1.0 - np.asarray(coco_mask.iou(xywh(im.det.box), xywh(im.gt_boxes), [0] * len(im.gt.boxes))).T
                distance[distance > 0.5] = np.nan
            else:
                distance = np.full((len(im.gt.boxes), len(im.det)), np.nan)
            acc.update(im.gt_ids.tolist(), im.det.track_id.tolist(), distance)
        accumulators.append(acc)
        names.append(camera)
    summary = mm.metrics.create().compute_many(
        accumulators, names=names, generate_overall=True,
        metrics=["mota", "idf1", "num_switches", "num_misses", "num_false_positives", "num_objects",
                 "num_predictions", "idtp"])
    for name, counts in [*ours.per_camera.items(), ("OVERALL", ours.total)]:
        row = summary.loc[name]
        assert counts.id_switches == row["num_switches"]
        assert counts.misses == row["num_misses"]
        assert counts.false_positives == row["num_false_positives"]
        assert counts.gt == row["num_objects"] and counts.hyp == row["num_predictions"]
        assert counts.idtp == row["idtp"]
        assert counts.mota == pytest.approx(row["mota"], abs=1e-9)
        assert counts.idf1 == pytest.approx(row["idf1"], abs=1e-9)
    assert ours.total.id_switches >= 2 and 0.0 < ours.total.idf1 < 1.0


def test_hint_events_on_time_late_and_false():
    config = MetricsConfig(early_s=0.5, max_delay_s=0.2, release_s=0.5)
    t = T0 + np.arange(60) * 100_000_000   # 10 Hz
    need = np.zeros(60, bool)
    hint = np.zeros(60, bool)
    need[10:20] = True; hint[11:22] = True    # caught 0.1 s late: on time
    need[30:35] = True; hint[33:34] = True    # caught 0.3 s late: late
    need[40:42] = True                        # missed
    hint[50:52] = True                        # false: no need near it
    hint[44:45] = True                        # 0.3 s after a need ended, within release: not false
    events = _events("brake", t, need, hint, config)
    assert (events.needed, events.on_time, events.late, events.missed) == (3, 1, 1, 1)
    assert (events.fired, events.false) == (4, 1)
    np.testing.assert_allclose(events.delays_s, [0.1, 0.3])
    assert events.recall == pytest.approx(1 / 3) and events.precision == pytest.approx(3 / 4)


@pytest.fixture(scope="module")
def labelled_drive(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap")


def test_run_metrics_from_a_recorded_run(labelled_drive, tmp_path):
    rig = small_rig()
    run = load_run(record(tmp_path / "run.mcap", rig, simulated_outputs(labelled_drive), labelled_drive))
    labels = ground_truth_for(run)
    assert labels is not None and len(labels) == 80
    metrics = evaluate_run(run, labels)
    assert len(metrics.images) == 80 and metrics.unused_frames == 0
    assert 0.8 < metrics.detection.map50 <= 1.0 and metrics.detection.map < metrics.detection.map50
    assert metrics.detection.gt_count.sum() == sum(len(gt.boxes) for gt in labels)
    # the simulated node renumbers the pedestrian's track from frame set 25 on, once per camera that sees it
    switch_cameras = {camera for camera, _ in metrics.tracking.switch_ns}
    assert metrics.tracking.total.id_switches == len(switch_cameras) >= 1
    assert all(T0 + 2_500_000_000 <= t < T0 + 3_000_000_000 for _, t in metrics.tracking.switch_ns)
    errors = metrics.kinematics
    assert errors.overall["range"].count > 100 and abs(errors.overall["range"].bias) < 0.5
    assert errors.overall["velocity"].median < 0.8
    assert len(errors.stats["range"]) == len(DISTANCE_BANDS) - 1
    brake = metrics.hints.stages["brake"]
    assert (brake.needed, brake.on_time, brake.false) == (1, 1, 0)
    np.testing.assert_allclose(brake.delays_s, [0.1])   # the simulated node lags one frame set
    assert set(metrics.latency.stages) == {"sync", "preprocess", "engine", "decode", "track", "total"}
    assert 8.0 <= metrics.latency.stages["engine"].p50_ms <= 8.8


def test_run_metrics_see_a_slow_brake_and_a_blind_class(labelled_drive, tmp_path):
    rig = small_rig()
    good = evaluate_run(load_run(record(tmp_path / "a.mcap", rig, simulated_outputs(labelled_drive), labelled_drive)),
                        None)
    assert good.detection is None and good.latency.stages["engine"].count == 40
    outputs = simulated_outputs(labelled_drive, lag_frames=6, drop_ids=(4,))
    run = load_run(record(tmp_path / "b.mcap", rig, outputs, labelled_drive))
    metrics = evaluate_run(run, ground_truth_for(run))
    assert metrics.hints.stages["brake"].late == 1 and metrics.hints.stages["brake"].on_time == 0
    assert metrics.detection.ap(CLASSES.index("cyclist"), 0) == 0.0


def test_unused_and_stale_frames(labelled_drive, tmp_path):
    """A frame set that marks a camera stale does not score that camera's frame twice; labelled frames no
    frame set used count as all missed."""
    rig = small_rig()
    outputs = simulated_outputs(labelled_drive)
    detections = [m for m in outputs if type(m).__name__ == "DetectionsMessage"]
    kept = [m for m in outputs if m not in detections[10:12]]  # two frame sets never published
    stale = detections[20]
    stale.stale[1] = True
    run = load_run(record(tmp_path / "run.mcap", rig, kept, labelled_drive))
    metrics = evaluate_run(run, ground_truth_for(run))
    unused = [im for im in metrics.images if im.frame_ns is None]
    assert len(unused) == 2 * 2 + 1 and metrics.unused_frames == 5
    assert all(len(im.det) == 0 for im in unused)
    everything = evaluate_run(load_run(record(tmp_path / "all.mcap", rig, simulated_outputs(labelled_drive),
                                              labelled_drive)), ground_truth_for(run))
    full = {(im.camera, im.t_ns): im for im in everything.images}
    assert metrics.tracking.total.gt == everything.tracking.total.gt   # unused frames still count ...
    lost = sum(len(full[(im.camera, im.t_ns)].det) for im in unused)   # ... with none of their detections
    assert lost > 0 and metrics.tracking.total.hyp == everything.tracking.total.hyp - lost
    assert metrics.tracking.total.misses > everything.tracking.total.misses
