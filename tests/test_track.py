"""Multi-camera tracking on simulated scenes projected through the default rig's real camera models."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from perception.detections import Detections
from perception.track import MultiCameraTracker, RangeSource, TrackedObjects
from tests.test_track_scene import PERIOD_NS, Scene, car, cruise, front_rig, match_truth


def run(scene: Scene, n: int, tracker: MultiCameraTracker | None = None, **frame_options
        ) -> tuple[MultiCameraTracker, list[tuple[int, TrackedObjects]]]:
    tracker = tracker or MultiCameraTracker(scene.cameras)
    outputs = [(frame, tracker.update(t_ns, camera_t, dets))
               for frame, t_ns, camera_t, dets in scene.frame_sets(n, **frame_options)]
    return tracker, outputs


def ids_by_truth(scene: Scene, outputs: list[tuple[int, TrackedObjects]], max_distance: float = 3.0
                 ) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """truth id -> global ids it was reported under, and global id -> truth ids it was matched to."""
    by_truth: dict[int, set[int]] = defaultdict(set)
    by_global: dict[int, set[int]] = defaultdict(set)
    for _, out in outputs:
        for k, truth_id in enumerate(match_truth(out.position, scene.truth(out.t_ns), max_distance)):
            if truth_id is not None:
                by_truth[truth_id].add(int(out.global_id[k]))
                by_global[int(out.global_id[k])].add(truth_id)
    return by_truth, by_global


def row(out: TrackedObjects, global_id: int) -> int:
    rows = np.flatnonzero(out.global_id == global_id)
    assert rows.size == 1, f"object {global_id} not in the output at t={out.t_ns}"
    return int(rows[0])


def test_ids_persist_and_coast_through_a_two_frame_occlusion():
    scene = Scene(front_rig(1), [car(1, cruise(30.0, 0.0, -2.0)), car(2, cruise(40.0, 3.5, 1.0))],
                  hidden={(1, 20), (1, 21)})
    _, outputs = run(scene, 40)
    by_truth, by_global = ids_by_truth(scene, outputs)
    assert all(len(ids) == 1 for ids in by_truth.values()) and set(by_truth) == {1, 2}
    assert all(len(truths) == 1 for truths in by_global.values())
    (lead_id,) = by_truth[1]
    coasting = {frame: bool(out.coasting[row(out, lead_id)]) for frame, out in outputs if frame >= 10}
    assert coasting[20] and coasting[21] and not coasting[19] and not coasting[22]
    assert sum(coasting.values()) == 2
    confidence = {frame: float(out.confidence[row(out, lead_id)]) for frame, out in outputs if frame >= 10}
    assert confidence[21] < confidence[20] < confidence[19] and confidence[23] > confidence[21]
    out = dict(outputs)[21]  # while coasting, the prediction stays on the moving object
    (x, _), _ = scene.truth(out.t_ns)[1]
    assert abs(out.position[row(out, lead_id), 0] - x) < 1.0
    per_camera = {int(out.camera_track_id[row(out, lead_id), 0]) for frame, out in outputs if frame >= 5}
    assert len(per_camera) == 1


def test_tracks_are_confirmed_before_they_are_published():
    scene = Scene(front_rig(1), [car(1, cruise(25.0, 0.0))])
    _, outputs = run(scene, 6)
    counts = [len(out) for _, out in outputs]
    assert counts[:2] == [0, 0] and all(c == 1 for c in counts[2:])  # confirm_hits = 3
    out = outputs[-1][1]
    assert out.hits[0] == 6 and out.age_s[0] == pytest.approx(5 * PERIOD_NS * 1e-9)


def test_no_id_switch_when_two_objects_cross_at_different_ranges():
    # the near car passes in front of the far one around t = 2 s, hiding it for several frames
    scene = Scene(front_rig(1), [car(1, cruise(14.0, 8.0, 0.0, -4.0)), car(2, cruise(30.0, -6.0, 0.0, 3.0))],
                  seed=3)
    hidden_frames = [frame for frame, _, _, dets in scene.frame_sets(80) if 30 <= frame <= 50 and len(dets) < 2]
    assert len(hidden_frames) >= 4  # the scene does exercise an occlusion
    scene = Scene(front_rig(1), scene.objects, seed=3)
    _, outputs = run(scene, 80)
    by_truth, by_global = ids_by_truth(scene, outputs)
    assert by_truth[1] and by_truth[2]
    assert all(len(ids) == 1 for ids in by_truth.values()), by_truth
    assert all(len(truths) == 1 for truths in by_global.values()), by_global


def test_overlapping_cameras_report_one_object():
    cameras = front_rig(2)  # front (60 deg) and front_left (100 deg, turned 55 deg left) overlap 5..30 deg left
    scene = Scene(cameras, [car(1, cruise(24.0, 7.0, -1.0, 0.0)), car(2, cruise(30.0, -2.0))])
    _, outputs = run(scene, 30)
    for frame, out in outputs[5:]:
        assert len(out) == 2, f"frame {frame}: {len(out)} objects"
    out = outputs[-1][1]
    by_truth, _ = ids_by_truth(scene, [outputs[-1]], max_distance=2.0)
    shared = row(out, next(iter(by_truth[1])))
    assert (out.camera_track_id[shared] >= 0).all()       # tracked in both cameras ...
    alone = row(out, next(iter(by_truth[2])))
    assert out.camera_track_id[alone].tolist()[1] == -1   # ... the other only in the front camera
    (x, y), (vx, _) = scene.truth(out.t_ns)[1]
    assert np.hypot(out.position[shared, 0] - x, out.position[shared, 1] - y) < 1.5
    assert abs(out.velocity[shared, 0] - vx) < 1.0


def test_a_dropped_frame_is_bridged_by_the_frame_timestamps():
    scene = Scene(front_rig(1), [car(1, cruise(35.0, 2.0, -6.0, -0.5))])
    _, outputs = run(scene, 40, dropped=frozenset({20}))
    assert [frame for frame, _ in outputs].count(20) == 0
    ids = {int(out.global_id[0]) for frame, out in outputs if frame >= 3}
    assert len(ids) == 1
    out = dict(outputs)[21]  # 100 ms after the previous frame set
    (x, y), _ = scene.truth(out.t_ns)[1]
    assert not out.coasting[0] and abs(out.position[0, 0] - x) < 1.0 and abs(out.position[0, 1] - y) < 0.3
    assert abs(out.velocity[0, 0] + 6.0) < 1.5


def test_a_stale_camera_ages_out_its_objects_and_keeps_shared_ones():
    cameras = front_rig(2)
    only_left = car(1, cruise(9.0, 9.0))     # 50 deg left: front_left only
    shared = car(2, cruise(24.0, 7.0))       # in both cameras
    scene = Scene(cameras, [only_left, shared])
    tracker, outputs = run(scene, 50, stale=lambda camera, frame: camera == 1 and frame >= 20)
    frames = dict(outputs)
    assert frames[30].camera_age_s[1] == pytest.approx((30 - 19) * PERIOD_NS * 1e-9, abs=1e-6)
    assert frames[30].camera_age_s[0] == pytest.approx(0.0, abs=0.01)
    by_truth, _ = ids_by_truth(scene, outputs)
    assert len(by_truth[2]) == 1  # the shared object keeps its id on the front camera alone
    left_id = next(iter(by_truth[1]))
    present = [frame for frame, out in outputs if left_id in out.global_id]
    # coasts on prediction for at most max_coast_s (0.5 s = 10 frames) after its camera's last frame
    assert 19 in present and max(present) <= 19 + 10 and 35 not in present
    out = frames[49]
    assert out.camera_track_id[row(out, next(iter(by_truth[2])))].tolist()[1] == -1


def test_velocity_converges_to_the_true_relative_velocity():
    scene = Scene(front_rig(1), [car(1, cruise(45.0, -3.5, -6.0, 0.4))], seed=7)
    _, outputs = run(scene, 60)
    errors = np.array([out.velocity[0, :2] - scene.truth(out.t_ns)[1][1] for frame, out in outputs if frame >= 30])
    assert np.abs(errors[:, 0]).max() < 1.5 and np.abs(errors[:, 0].mean()) < 0.5
    assert np.abs(errors[:, 1]).max() < 0.3
    assert np.all(outputs[-1][1].velocity_std[0] < 2.0)


def test_ttc_of_a_closing_lead():
    lead = car(1, cruise(3.7 + 40.0 + 2.25, 0.0, -7.5))
    receding = car(2, cruise(20.0, -3.5, 2.0))
    scene = Scene(front_rig(1), [lead, receding], seed=5)
    _, outputs = run(scene, 50)
    for frame, out in outputs[30:]:
        by_truth, _ = ids_by_truth(scene, [(frame, out)])
        k = row(out, next(iter(by_truth[1])))
        (x, _), (vx, _) = scene.truth(out.t_ns)[1]
        true_gap = x - 2.25 - 3.7
        assert out.gap_m[k] == pytest.approx(true_gap, rel=0.05)
        assert out.ttc_s[k] == pytest.approx(true_gap / 7.5, rel=0.15)
        assert np.isinf(out.ttc_s[row(out, next(iter(by_truth[2])))])


def test_outputs_describe_the_measurements():
    scene = Scene(front_rig(1), [car(1, cruise(25.0, 0.0))], range_head=False)
    _, outputs = run(scene, 10)
    out = outputs[-1][1]
    assert out.range_source.tolist() == [RangeSource.GEOMETRY]
    assert out.range_m[0] == pytest.approx(25.0, abs=1.0) and out.position[0, 2] == 0.0
    assert out.camera.tolist() == [0] and out.cls.tolist() == [0]
    box = out.box[0]
    assert 900 < (box[0] + box[2]) / 2 < 1020 and out.camera_sees_ahead.tolist() == [True]
    assert 0.5 < out.confidence[0] <= 1.0
    scene = Scene(front_rig(1), [car(1, cruise(25.0, 0.0))])
    assert run(scene, 10)[1][-1][1].range_source.tolist() == [RangeSource.FUSED]


def test_a_single_false_detection_is_never_published():
    scene = Scene(front_rig(1), [car(1, cruise(25.0, 0.0))])
    tracker = MultiCameraTracker(scene.cameras)
    published = set()
    for frame, t_ns, camera_t, dets in scene.frame_sets(20):
        if frame == 10:
            ghost = Detections(np.zeros(1, np.int32), np.zeros(1, np.int32), np.full(1, 0.9, np.float32),
                               np.array([[300, 560, 380, 620]], np.float32), np.full(1, np.nan, np.float32),
                               np.full((1, 2), np.nan, np.float32))
            dets = Detections.concatenate([dets, ghost])
        published |= set(tracker.update(t_ns, camera_t, dets).global_id.tolist())
    assert len(published) == 1


def test_frames_not_newer_than_the_last_are_counted_and_ignored():
    scene = Scene(front_rig(1), [car(1, cruise(25.0, 0.0))])
    tracker, outputs = run(scene, 10)
    last = outputs[-1][1]
    _, _, _, dets = next(scene.frame_sets(1))
    out = tracker.update(last.t_ns, {0: 0}, dets)  # a repeated old frame of camera 0
    assert tracker.out_of_order_frames == 1 and out.hits[0] == last.hits[0] and out.coasting[0]


def test_inputs_that_break_the_contract_raise():
    tracker = MultiCameraTracker(front_rig(1))
    _, _, _, dets = next(Scene(front_rig(1), [car(1, cruise(25.0, 0.0))]).frame_sets(1))
    with pytest.raises(ValueError, match=r"camera\(s\) \[0\] that have no frame"):
        tracker.update(0, {}, dets)
    with pytest.raises(ValueError, match="camera index 3 is not in the rig"):
        tracker.update(0, {3: 0}, Detections.empty())
