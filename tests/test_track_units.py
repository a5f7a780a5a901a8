"""Building blocks of the tracker: Kalman filter, gated assignment, IoU, per-camera tracks, configuration."""

from __future__ import annotations

import numpy as np
import pytest

from perception.detections import Detections
from perception.errors import ConfigError
from perception.eval.detection import box_iou
from perception.track import TrackerConfig, gap_and_ttc, kalman
from perception.track.camera_tracker import CameraTracker, ImageTracks
from perception.track.matching import gated_assignment


# ---- Kalman filter -----------------------------------------------------------------------------------------
def test_constant_velocity_prediction_moves_by_velocity_times_dt():
    x = np.array([[1.0, 2.0, 3.0, -1.0]])  # 2 axes: position (1, 2), velocity (3, -1)
    P = np.eye(4)[None] * 0.1
    x2, P2 = kalman.predict(x, P, 0.1, np.array([[1.0, 1.0]]), order=2)
    np.testing.assert_allclose(x2[0], [1.3, 1.9, 3.0, -1.0])
    assert P2[0, 0, 0] > P[0, 0, 0] and P2[0, 0, 2] > 0  # uncertainty grows, position and velocity correlate


def test_constant_acceleration_prediction_integrates_acceleration():
    x = np.array([[0.0, 10.0, -2.0]])  # 1 axis: position, velocity, acceleration
    x2, _ = kalman.predict(x, np.eye(3)[None], 0.5, np.array([[1.0]]), order=3)
    np.testing.assert_allclose(x2[0], [10.0 * 0.5 - 0.5 * 2.0 * 0.25, 10.0 - 1.0, -2.0])


def test_update_matches_scalar_kalman_gain():
    x = np.array([[0.0, 0.0]])
    P = np.diag([4.0, 1.0])[None]
    x2, P2 = kalman.update(x, P, np.array([[2.0]]), np.array([[[1.0]]]))  # measures the first entry
    gain = 4.0 / (4.0 + 1.0)
    np.testing.assert_allclose(x2[0], [gain * 2.0, 0.0])
    np.testing.assert_allclose(P2[0], np.diag([4.0 * (1 - gain), 1.0]))


def test_sliced_update_and_distances_equal_the_textbook_h_forms():
    """The first m of n entries measured, with correlated covariances: the textbook forms with H = [I 0]."""
    rng = np.random.default_rng(5)
    n, m, batch = 8, 6, 4
    A = rng.normal(size=(batch, n, n))
    P = A @ A.transpose(0, 2, 1) + np.eye(n)
    B = rng.normal(size=(batch, m, m))
    R = B @ B.transpose(0, 2, 1) + np.eye(m)
    x, z = rng.normal(size=(batch, n)), rng.normal(size=(batch, m))
    H = np.eye(m, n)
    S = H @ P @ H.T + R
    K = P @ H.T @ np.linalg.inv(S)
    x2, P2 = kalman.update(x, P, z, R)
    np.testing.assert_allclose(x2, x + np.einsum("nij,nj->ni", K, z - x @ H.T), rtol=1e-9, atol=1e-12)
    I_KH = np.eye(n) - K @ H
    np.testing.assert_allclose(P2, I_KH @ P @ I_KH.transpose(0, 2, 1) + K @ R @ K.transpose(0, 2, 1),
                               rtol=1e-9, atol=1e-12)
    innovation = z - x @ H.T
    want = np.einsum("ni,ni->n", innovation, np.linalg.solve(S, innovation[..., None])[..., 0])
    np.testing.assert_allclose(kalman.mahalanobis2_paired(x, P, z, R), want, rtol=1e-12)
    np.testing.assert_allclose(np.diag(kalman.mahalanobis2(x, P, z, R)), want, rtol=1e-12)


def test_mahalanobis_distance_of_all_pairs():
    x = np.array([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0]])
    P = np.stack([np.eye(4), np.eye(4) * 4])
    z = np.array([[1.0, 0.0], [10.0, 3.0]])
    R = np.stack([np.eye(2), np.eye(2)])
    d2 = kalman.mahalanobis2(x, P, z, R)
    np.testing.assert_allclose(d2, [[1.0 / 2, (100 + 9) / 2], [81.0 / 5, 9.0 / 5]])


# ---- assignment and overlap ----------------------------------------------------------------------------------
def test_gated_assignment_is_optimal_and_respects_the_gate():
    cost = np.array([[0.1, 0.2], [0.15, 0.9]])
    rows, cols = gated_assignment(cost, 0.5)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]  # total 0.35 beats 0.1 + 0.9
    rows, cols = gated_assignment(np.array([[0.1, np.inf], [0.7, 0.8]]), 0.5)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]
    assert gated_assignment(np.zeros((0, 3)), 0.5)[0].size == 0


def test_box_iou():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_allclose(box_iou(a, b), [[50.0 / 150.0, 0.0, 1.0]])
    inverted = np.array([[10.0, 0.0, 5.0, 10.0], [10.0, 10.0, 0.0, 0.0]])  # a predicted box whose size went < 0
    np.testing.assert_array_equal(box_iou(inverted, np.concatenate([a, b])), np.zeros((2, 4)))


def test_gap_and_ttc():
    position = np.array([[23.7 + 2.25, 0.0], [23.7 + 2.25, 0.0], [-10.0, 0.0], [23.7 + 2.25, 0.0]])
    velocity = np.array([[-5.0, 0.0], [5.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    footprint = np.tile([4.5, 1.8], (4, 1))
    gap, ttc = gap_and_ttc(position, velocity, footprint, ego_front_m=3.7)
    np.testing.assert_allclose(gap[:2], [20.0, 20.0])
    assert ttc[0] == pytest.approx(4.0) and np.isinf(ttc[1:]).all()  # closing; opening; behind; not moving


# ---- per-camera tracks -----------------------------------------------------------------------------------------
def _dets(boxes, scores, cls=0) -> Detections:
    n = len(boxes)
    return Detections(np.zeros(n, np.int32), np.full(n, cls, np.int32), np.array(scores, np.float32),
                      np.array(boxes, np.float32).reshape(n, 4), np.full(n, np.nan, np.float32),
                      np.full((n, 2), np.nan, np.float32))


def test_camera_tracks_confirm_coast_and_drop():
    cfg = TrackerConfig(confirm_hits=3, max_misses=2)
    tracker = CameraTracker(cfg)
    box = [100.0, 100.0, 160.0, 150.0]
    ids = []
    for k in range(3):
        step = tracker.step(k * 50_000_000, _dets([box], [0.9]))
        ids.append(step.track_ids.tolist())
    assert ids == [[1], [1], [1]] and tracker.tracks.confirmed.tolist() == [True]
    for k in range(3, 5):  # two misses: coasting
        assert tracker.step(k * 50_000_000, Detections.empty()).dropped.size == 0
    assert tracker.step(5 * 50_000_000, Detections.empty()).dropped.tolist() == [1]  # third miss
    assert len(tracker) == 0


def test_a_matched_track_that_leaves_the_image_is_dropped_and_not_reported_as_measured():
    """Its detection matched it, but its updated box lies outside the image: it is dropped in that step and
    must not be in the step's measured tracks (the fusion would link a track that no longer exists)."""
    tracker = CameraTracker(TrackerConfig(), (160, 90))
    first = tracker.step(0, _dets([[150.0, 10.0, 200.0, 50.0]], [0.9]))
    assert first.track_ids.tolist() == [1]
    step = tracker.step(50_000_000, _dets([[159.5, 10.0, 209.5, 50.0]], [0.9]))
    assert step.dropped.tolist() == [1] and 1 not in step.track_ids.tolist() and len(tracker) == 0
    assert len(step.track_ids) == len(step.det_index)


def test_one_table_of_several_cameras_equals_one_tracker_per_camera():
    """`ImageTracks` steps several cameras (each by its own frame interval, one without tracks yet, one stale
    for a frame) in batched calls: every camera's tracks, ids and steps are exactly those of its own tracker."""
    config = TrackerConfig()
    alone = [CameraTracker(config, (640, 480)) for _ in range(3)]
    table = ImageTracks(config, [(640, 480)] * 3)
    box = np.array([100.0, 100.0, 160.0, 150.0])
    for k in range(8):
        frames = [(c, k * (50_000_000 + 7_000_000 * c), _dets([box + 4 * k + 30 * c, box + 200 - 3 * k], [0.9, 0.8])
                   if k >= c else Detections.empty()) for c in range(3) if (c, k) != (1, 4)]
        steps = {c: alone[c].step(t, dets) for c, t, dets in frames}
        for (c, _, _), step in zip(frames, table.step(frames)):
            assert step.track_ids.tolist() == steps[c].track_ids.tolist()
            assert step.det_index.tolist() == steps[c].det_index.tolist()
            assert step.dropped.tolist() == steps[c].dropped.tolist()
        for c, tracker in enumerate(alone):
            rows = table.camera == c
            assert np.array_equal(table.ids[rows], tracker.tracks.ids)
            assert np.array_equal(table.x[rows], tracker.tracks.x) and np.array_equal(table.P[rows], tracker.tracks.P)
            assert np.array_equal(table.misses[rows], tracker.tracks.misses)
    assert [int((table.camera == c).sum()) for c in range(3)] == [2, 2, 2]


def test_tentative_track_dies_on_first_miss_and_weak_detections_start_nothing():
    tracker = CameraTracker(TrackerConfig())
    tracker.step(0, _dets([[0, 0, 50, 50], [200, 0, 250, 50]], [0.9, 0.3]))
    assert len(tracker) == 1  # the weak detection started nothing
    assert tracker.step(50_000_000, Detections.empty()).dropped.tolist() == [1]


def test_weak_detection_extends_a_confirmed_track_in_the_second_stage():
    tracker = CameraTracker(TrackerConfig())
    box = np.array([100.0, 100.0, 160.0, 150.0])
    for k in range(4):
        tracker.step(k * 50_000_000, _dets([box + 2 * k], [0.9]))
    step = tracker.step(4 * 50_000_000, _dets([box + 8], [0.3]))  # partly occluded: low score
    assert step.track_ids.tolist() == [1] and tracker.tracks.misses.tolist() == [0]


def test_class_mismatch_never_matches():
    tracker = CameraTracker(TrackerConfig())
    tracker.step(0, _dets([[0, 0, 50, 50]], [0.9], cls=0))
    step = tracker.step(50_000_000, _dets([[0, 0, 50, 50]], [0.9], cls=2))
    assert step.track_ids.tolist() == [2] and step.dropped.tolist() == [1]


def test_image_velocity_head_starts_a_track_moving():
    dets = _dets([[100, 100, 160, 150]], [0.9])
    dets.image_velocity[:] = (300.0, -40.0)
    with_head, without = CameraTracker(TrackerConfig(use_image_velocity=True)), CameraTracker(TrackerConfig())
    for tracker in (with_head, without):
        tracker.step(0, dets)
    np.testing.assert_allclose(with_head.tracks.x[0, 4:6], [300.0, -40.0])
    np.testing.assert_allclose(without.tracks.x[0, 4:6], [0.0, 0.0])
    assert with_head.tracks.P[0, 4, 4] < without.tracks.P[0, 4, 4]


def test_a_narrow_object_faster_than_its_width_keeps_one_track():
    """A pedestrian crossing a side camera at 400 px/s (40 px per frame, 14 px wide) overlaps its predicted box
    in no frame: the centre stage keeps its track (confirmed on the third frame); IoU alone restarts it."""
    boxes = [[100.0 + 40 * k, 200.0, 114.0 + 40 * k, 256.0] for k in range(6)]
    ids = {}
    for gate in (TrackerConfig().centre_gate_chi2, 0.0):
        tracker = CameraTracker(TrackerConfig(centre_gate_chi2=gate))
        ids[gate] = [tracker.step(k * 100_000_000, _dets([box], [0.9])).track_ids.tolist()
                     for k, box in enumerate(boxes)]
        assert tracker.tracks.confirmed.tolist() == ([True] if gate else [False])
    assert ids[TrackerConfig().centre_gate_chi2] == [[1]] * 6
    assert ids[0.0] == [[k + 1] for k in range(6)]


def test_the_centre_stage_keeps_its_gate_and_the_box_height():
    """Confident detections far outside the predicted centre's uncertainty, or of another height, start tracks."""
    tracker = CameraTracker(TrackerConfig())
    tracker.step(0, _dets([[100.0, 200.0, 114.0, 256.0]], [0.9]))
    far = tracker.step(100_000_000, _dets([[400.0, 200.0, 414.0, 256.0]], [0.9]))        # 300 px in 0.1 s
    assert far.track_ids.tolist() == [2] and far.dropped.tolist() == [1]
    tall = tracker.step(200_000_000, _dets([[440.0, 150.0, 460.0, 256.0]], [0.9]))      # 2x the height
    assert tall.track_ids.tolist() == [3] and tall.dropped.tolist() == [2]


def test_constant_velocity_box_prediction_follows_a_moving_box():
    tracker = CameraTracker(TrackerConfig())
    for k in range(10):  # 200 px/s to the right
        tracker.step(k * 50_000_000, _dets([[100 + 10 * k, 100, 160 + 10 * k, 150]], [0.9]))
    tracker.step(10 * 50_000_000, Detections.empty())
    np.testing.assert_allclose(tracker.tracks.boxes[0], [200, 100, 260, 150], atol=2.0)


# ---- configuration --------------------------------------------------------------------------------------------
def test_tracker_config_defaults_and_from_dict():
    assert TrackerConfig.from_dict(None, "node.yaml: tracker") == TrackerConfig()
    cfg = TrackerConfig.from_dict({"max_misses": 3, "min_iou": 0.3, "max_coast_s": 1}, "node.yaml: tracker")
    assert cfg.max_misses == 3 and cfg.min_iou == 0.3 and cfg.max_coast_s == 1.0
    assert isinstance(cfg.max_coast_s, float)


@pytest.mark.parametrize("settings, message", [
    ({"max_misses": -1}, "node.yaml: tracker.max_misses: must be >= 0"),
    ({"min_iou": 1.0}, "node.yaml: tracker.min_iou: must be < 1.0"),
    ({"confirm_hits": 2.5}, "node.yaml: tracker.confirm_hits: must be an integer"),
    ({"jerk_std_mps3": "fast"}, "node.yaml: tracker.jerk_std_mps3: must be a number"),
    ({"use_image_velocity": 1}, "node.yaml: tracker.use_image_velocity: must be true or false"),
    ({"max_coast_s": float("nan")}, "node.yaml: tracker.max_coast_s: must be finite"),
    ({"low_score": 0.7}, "node.yaml: tracker.low_score: must be <= high_score"),
    ({"max_mises": 3}, "node.yaml: tracker.max_mises: unknown key"),
])
def test_tracker_config_errors_name_the_key(settings, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        TrackerConfig.from_dict(settings, "node.yaml: tracker")


def test_tracker_config_validates_direct_construction_and_non_mappings():
    with pytest.raises(ConfigError, match=r"TrackerConfig\.confirm_hits: must be >= 1"):
        TrackerConfig(confirm_hits=0)
    with pytest.raises(ConfigError, match="node.yaml: tracker: must be a mapping"):
        TrackerConfig.from_dict([1, 2], "node.yaml: tracker")


def test_every_setting_is_documented():
    for key, _, _, doc in TrackerConfig.describe():
        assert doc, key
