"""Replay metrics: detection mAP against pycocotools, tracking against py-motmetrics, and the metrics of a
recorded run against its labelled drive."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perception.labels import CLASSES, GroundTruth, GroundTruthBox, GroundTruthObject
from replay.metrics import MetricsConfig, evaluate_run, ground_truth_for
from replay.metrics.align import EvalImage, ImageDetections, mark_other_views
from replay.metrics.config import DISTANCE_BANDS
from replay.metrics.hints import _events
from replay.metrics.detection import evaluate_levels
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


def _two_views(published: tuple[str, ...], exact: bool, frames: int = 3) -> list[EvalImage]:
    """One car seen by two cameras of each frame set (boxes of 60 px); the node publishes it in `published`
    (a fused object: one camera; unfused: both). `exact`: a 3D label names it one object in both cameras."""
    boxes = {"front": (400.0, 200.0, 500.0, 260.0), "front_left": (20.0, 210.0, 110.0, 270.0)}
    images = []
    for f in range(frames):
        t = T0 + f * 100_000_000
        for camera, box in boxes.items():
            obj = (GroundTruthObject(7, "car", (12.0, 3.0, 0.7), (0.0, 0.0, 0.0), (4.5, 1.8, 1.5), 0.0),)
            gt = GroundTruth(camera, t, (GroundTruthBox(7, "car", box, 0.0, 0.0),), obj if exact else (), 0.0)
            n = int(camera in published)
            det = _image(camera, t, [], [], [], [box] * n, [0] * n, [0.9] * n, [5] * n).det
            images.append(EvalImage(camera, t + (2_000_000 if camera == "front_left" else 0), gt, det, t))
    return mark_other_views(images, 0.5)


@pytest.mark.parametrize("published", [("front",), ("front_left",), ("front", "front_left"), ()])
def test_a_fused_object_is_scored_once_per_frame_set(published):
    images = _two_views(published, exact=True)
    widths = {"front": 960, "front_left": 960}
    car = evaluate_levels(images, widths)["moderate"]
    tracking = evaluate_tracking(images).total
    assert car.gt_count[0] == 3                     # three frame sets, one object: not six boxes
    assert sum(int((~im.scored_view).sum()) for im in images) == 3
    if published:
        assert car.ap(0, 0) == pytest.approx(1.0)   # in whichever camera it is published, a duplicate is no FP
        assert (tracking.gt, tracking.misses, tracking.false_positives) == (3, 0, 0)
        scored = {im.camera for im in images if im.scored_view.all()}
        assert scored <= set(published)
    else:
        assert car.ap(0, 0) == 0.0 and (tracking.gt, tracking.misses) == (3, 3)


def test_views_without_a_3d_label_are_each_scored():
    """Auto labels carry per-camera track ids: the same id in two cameras is not one object."""
    images = _two_views(("front",), exact=False)
    car = evaluate_levels(images, {"front": 960, "front_left": 960})["moderate"]
    assert all(im.other_view is None for im in images)
    assert car.gt_count[0] == 6 and car.recall[0, 0] == pytest.approx(0.5)
    assert evaluate_tracking(images).total.misses == 3


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
    # an object seen by both cameras of a frame set is scored once (the other view is neither hit nor miss)
    objects = {(im.frame_ns, b.id) for im in metrics.images for b in im.gt.boxes}
    assert metrics.detection.gt_count.sum() == len(objects) < sum(len(gt.boxes) for gt in labels)
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
    # unused frames still count, all their views (no frame set fused them) ...
    views = sum(int(np.count_nonzero(~full[(im.camera, im.t_ns)].scored_view)) for im in unused)
    assert metrics.tracking.total.gt == everything.tracking.total.gt + views
    lost = sum(len(full[(im.camera, im.t_ns)].det) for im in unused)   # ... with none of their detections
    published = [sum(len(im.det) for im in m.images) for m in (metrics, everything)]
    assert lost > 0 and published[0] == published[1] - lost
    assert metrics.tracking.total.misses > everything.tracking.total.misses
