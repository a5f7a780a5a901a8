"""Ranging: flat-ground geometry through real camera models, fused with a range head by inverse variance."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calib.camera import CameraModel, mount_transform
from calib.defaults import default_rig
from perception.errors import ConfigError
from perception.track import RangeSource, RangingConfig, estimate_positions
from perception.track.ranging import RAY_TABLE_TOLERANCE_PX, RigRanging
from tests.test_track_scene import car, cruise, front_rig, true_box

CONFIG = RangingConfig()
NO_HEAD = np.array([np.nan])
CAR = np.array([0])


def estimate(camera: CameraModel, x: float, y: float, head: float = np.nan, config: RangingConfig = CONFIG):
    box = true_box(camera, car(1, cruise(x, y)).corners(0.0))
    assert box is not None, f"car at ({x}, {y}) not visible in {camera.name}"
    return estimate_positions(camera, box[None], CAR, np.array([head]), config)


@pytest.mark.parametrize("x", [10.0, 15.0, 30.0, 50.0, 80.0])
@pytest.mark.parametrize("y", [0.0, 3.5, -3.5])
def test_geometric_position_of_a_car_ahead(x, y):
    est = estimate(front_rig(1)[0], x, y)
    assert est.source.tolist() == [RangeSource.GEOMETRY]
    assert est.range_m[0] == pytest.approx(np.hypot(x, y), rel=0.03)
    assert abs(est.position[0, 1] - y) < 0.05 * x
    assert est.position[0, 2] == CONFIG.ground_z_m


def test_every_camera_of_the_rig_states_its_error_honestly():
    """Cars all around, seen through each of the six (distorted, fisheye) cameras: the error is within 3 of
    the stated standard deviations."""
    checked = 0
    for camera in default_rig(6).cameras:
        for x in np.arange(-60.0, 100.0, 8.0):
            for y in np.arange(-20.0, 20.0, 5.0):
                box = true_box(camera, car(1, cruise(x, y)).corners(0.0))
                if box is None or np.hypot(x, y) < 6.0:
                    continue
                est = estimate_positions(camera, box[None], CAR, NO_HEAD, CONFIG)
                error = est.position[0, :2] - (x, y)
                assert error @ np.linalg.solve(est.covariance[0], error) < 9.0, (camera.name, x, y, error)
                checked += 1
    assert checked > 200


def test_geometric_uncertainty_grows_with_distance_and_pitch_error():
    front = front_rig(1)[0]
    stds = [np.sqrt(estimate(front, x, 0.0).covariance[0, 0, 0]) for x in (10.0, 20.0, 40.0, 80.0)]
    assert all(a < b for a, b in zip(stds, stds[1:]))
    assert stds[3] / stds[1] > 8.0  # about quadratic in the distance
    loose = dataclasses.replace(CONFIG, pitch_std_rad=0.02)
    assert np.sqrt(estimate(front, 40.0, 0.0, config=loose).covariance[0, 0, 0]) > 2 * stds[2]


def test_a_real_pitch_error_stays_within_the_stated_uncertainty():
    """The camera is pitched 0.3 deg more than its calibration says: the range error grows with the square
    of the distance and stays inside the stated std (pitch_std_rad = 0.005 rad)."""
    calibrated = front_rig(1)[0]
    actual = dataclasses.replace(calibrated, T_vehicle_camera=mount_transform(1.90, 0.0, 1.40, pitch_deg=1.3))
    errors = []
    for x in (10.0, 20.0, 40.0, 60.0):
        box = true_box(actual, car(1, cruise(x, 0.0)).corners(0.0))
        est = estimate_positions(calibrated, box[None], CAR, NO_HEAD, CONFIG)
        errors.append(abs(est.position[0, 0] - x))
        assert errors[-1] < 2.0 * np.sqrt(est.covariance[0, 0, 0])
    assert errors[3] > 10 * errors[0] and errors[3] > 2.0


def test_inverse_variance_fusion_with_the_range_head():
    front = front_rig(1)[0]
    near = estimate(front, 10.0, 0.0, head=12.0)   # head 20 % long at 10 m: geometry is far better there
    far = estimate(front, 100.0, 0.0, head=90.0)   # head 10 % short at 100 m: the head wins there
    assert near.source.tolist() == far.source.tolist() == [RangeSource.FUSED]
    assert abs(near.range_m[0] - 10.0) < 0.3
    assert abs(far.range_m[0] - 90.0) < abs(far.range_m[0] - 100.0)
    for x, head in ((10.0, 12.0), (100.0, 90.0)):
        fused = estimate(front, x, 0.0, head=head).covariance[0, 0, 0]
        geometric = estimate(front, x, 0.0).covariance[0, 0, 0]
        head_var = max(CONFIG.head_min_std_m, CONFIG.head_relative_std * head) ** 2
        assert fused == pytest.approx(1.0 / (1.0 / geometric + 1.0 / head_var), rel=0.02)


def test_frame_to_frame_noise_excludes_the_persistent_bias():
    est = estimate(front_rig(1)[0], 40.0, 0.0)
    assert est.noise_covariance[0, 0, 0] < 0.2 * est.covariance[0, 0, 0]
    assert est.noise_covariance[0, 1, 1] < est.covariance[0, 1, 1]


def test_rays_above_the_horizon_use_the_head_alone():
    front = front_rig(1)[0]
    horizon_row = front.project(np.array([[1000.0, 0.0, front.position[2]]]))[0][0, 1]
    box = np.array([[900.0, horizon_row - 60.0, 1000.0, horizon_row - 10.0]])  # e.g. a truck up a hill
    est = estimate_positions(front, box, CAR, np.array([70.0]), CONFIG)
    assert est.source.tolist() == [RangeSource.HEAD]
    assert est.range_m[0] == pytest.approx(70.0, rel=1e-6)
    bearing = np.arctan2(est.position[0, 1], est.position[0, 0] - front.position[0])
    assert abs(bearing) < 0.05
    none = estimate_positions(front, box, CAR, NO_HEAD, CONFIG)
    assert none.source.tolist() == [RangeSource.NONE] and np.isnan(none.position).all()


def test_geometry_beyond_max_range_is_discarded():
    short = dataclasses.replace(CONFIG, max_range_m=30.0)
    assert estimate(front_rig(1)[0], 60.0, 0.0, config=short).source.tolist() == [RangeSource.NONE]
    assert estimate(front_rig(1)[0], 60.0, 0.0, head=60.0, config=short).source.tolist() == [RangeSource.HEAD]


def test_class_footprint_moves_the_estimate_to_the_object_centre():
    front = front_rig(1)[0]
    box = true_box(front, car(1, cruise(30.0, 0.0)).corners(0.0))[None]
    as_car = estimate_positions(front, box, np.array([0]), NO_HEAD, CONFIG)
    as_truck = estimate_positions(front, box, np.array([1]), NO_HEAD, CONFIG)
    offset = as_truck.position[0, 0] - as_car.position[0, 0]
    assert offset == pytest.approx((CONFIG.truck_length_m - CONFIG.car_length_m) / 2, abs=0.01)


def test_batch_of_mixed_cases():
    front = front_rig(1)[0]
    boxes = np.stack([true_box(front, car(1, cruise(x, 0.0)).corners(0.0)) for x in (12.0, 25.0, 50.0)])
    est = estimate_positions(front, boxes, np.zeros(3, int), np.array([np.nan, 25.0, np.nan]), CONFIG)
    assert est.source.tolist() == [RangeSource.GEOMETRY, RangeSource.FUSED, RangeSource.GEOMETRY]
    np.testing.assert_allclose(est.range_m, [12.0, 25.0, 50.0], rtol=0.03)
    assert estimate_positions(front, np.zeros((0, 4)), np.zeros(0, int), np.zeros(0), CONFIG).position.shape == (0, 3)


@pytest.mark.parametrize("settings, message", [
    ({"pitch_std_rad": -0.1}, "rig.yaml: ranging.pitch_std_rad: must be >= 0.0 rad"),
    ({"head_relative_std": 0}, "rig.yaml: ranging.head_relative_std: must be > 0.0"),
    ({"car_length_m": "long"}, "rig.yaml: ranging.car_length_m: must be a number"),
    ({"pitch_std": 0.01}, "rig.yaml: ranging.pitch_std: unknown key"),
])
def test_ranging_config_errors_name_the_key(settings, message):
    with pytest.raises(ConfigError) as error:
        RangingConfig.from_dict(settings, "rig.yaml: ranging")
    assert str(error.value).startswith(message)


def test_every_class_has_a_footprint():
    from perception.labels import CLASSES

    assert RangingConfig().footprint(np.arange(len(CLASSES))).shape == (len(CLASSES), 2)


def _opencv_rays(camera: CameraModel, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame unit rays through pixels uv by OpenCV's undistortion, and where OpenCV's fixed-point
    iteration converged (its solution reprojects onto the pixel)."""
    import cv2

    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    points = uv.reshape(-1, 1, 2)
    if camera.distortion == "equidistant":
        xy = cv2.fisheye.undistortPoints(points, camera.K, camera.dist, criteria=criteria).reshape(-1, 2)
        back = cv2.fisheye.distortPoints(xy.reshape(-1, 1, 2), camera.K, camera.dist).reshape(-1, 2)
    else:
        xy = cv2.undistortPoints(points, camera.K, camera.dist, None, None, None, criteria).reshape(-1, 2)
        xyz = np.concatenate([xy, np.ones((len(xy), 1))], 1)
        back = cv2.projectPoints(xyz, np.zeros(3), np.zeros(3), camera.K, camera.dist)[0].reshape(-1, 2)
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1)
    return rays / np.linalg.norm(rays, axis=1, keepdims=True), np.linalg.norm(back - uv, axis=1) < 1e-6


def test_tabulated_rays_agree_with_opencv_within_the_stated_tolerance():
    """The six distorted and fisheye cameras of the default rig and the 960x540 demo cameras: every pixel's
    tabulated ray is within RAY_TABLE_TOLERANCE_PX (angle x focal length) of OpenCV's undistortion."""
    rng = np.random.default_rng(5)
    cameras = [*default_rig(6).cameras, *(dataclasses.replace(c, width=960, height=540, fx=c.fx / 2, fy=c.fy / 2,
                                                             cx=479.5, cy=269.5) for c in default_rig(3).cameras)]
    ranging = RigRanging(cameras, CONFIG)
    for c, camera in enumerate(cameras):
        uv = rng.uniform([-0.5, -0.5], [camera.width - 0.5, camera.height - 0.5], size=(4000, 2))
        expected, converged = _opencv_rays(camera, uv)
        assert converged.mean() > 0.9, camera.name
        rays = ranging.rays(np.full(len(uv), c), uv) @ camera.R_vehicle_camera  # back to the camera frame
        angle = np.linalg.norm(np.cross(rays[converged], expected[converged]), axis=1)
        assert angle.max() * max(camera.fx, camera.fy) <= RAY_TABLE_TOLERANCE_PX, camera.name
    assert ranging.step.max() == 32.0 and ranging.step.min() < 32.0  # coarse where it can be, finer where not


def test_rig_ranging_equals_the_lens_model_estimate_for_every_camera_at_once():
    """All cameras' boxes in one call, including boxes off the image (the lens model itself) and above the
    horizon (the head alone): the same sources, positions within millimetres."""
    cameras = default_rig(6).cameras
    ranging = RigRanging(cameras, CONFIG)
    rng = np.random.default_rng(6)
    camera = rng.integers(0, len(cameras), 600)
    size = np.array([[cameras[c].width, cameras[c].height] for c in camera], np.float64)
    bottom = rng.uniform(-0.1, 1.1, (600, 2)) * size  # a tenth of them off the image
    boxes = np.concatenate([bottom - [30.0, 60.0], bottom + [30.0, 0.0]], 1)
    cls = rng.integers(0, 4, 600)
    head = np.where(rng.uniform(size=600) < 0.5, rng.uniform(5.0, 120.0, 600), np.nan)
    est = ranging.estimate(camera, boxes, cls, head)
    for c, lens in enumerate(cameras):
        rows = camera == c
        exact = estimate_positions(lens, boxes[rows], cls[rows], head[rows], CONFIG)
        np.testing.assert_array_equal(est.source[rows], exact.source)
        ok = exact.source != RangeSource.NONE
        np.testing.assert_allclose(est.position[rows][ok], exact.position[ok], atol=1e-3, rtol=1e-6)
        np.testing.assert_allclose(est.covariance[rows][ok], exact.covariance[ok], atol=1e-6, rtol=1e-5)
        assert np.isnan(est.position[rows][~ok]).all()
    assert (est.source == RangeSource.NONE).any() and (est.source == RangeSource.HEAD).any()
