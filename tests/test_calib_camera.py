"""CameraModel against OpenCV's projection, its own inverse, and the ground plane; the default rig."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from calib.camera import CameraModel, mount_transform
from calib.defaults import default_rig
from calib.rig import Rig
from perception.errors import CalibrationError

PLUMB_BOB = (-0.28, 0.08, 0.0012, -0.0007, -0.01)
RATIONAL = (0.9, 0.1, 0.0004, 0.0002, -0.002, 1.2, 0.25, 0.01)
FISHEYE = (0.02, -0.006, 0.001, -0.0002)


def _camera(distortion: str, coeffs: tuple[float, ...], **kw) -> CameraModel:
    args = dict(name="cam", width=1280, height=800, fx=700.0, fy=705.0, cx=641.3, cy=398.7,
                distortion=distortion, coeffs=coeffs,
                T_vehicle_camera=mount_transform(1.8, 0.3, 1.4, yaw_deg=20.0, pitch_deg=3.0, roll_deg=-1.0))
    args.update(kw)
    return CameraModel(**args)


def _points_in_view(camera: CameraModel, n: int = 500, seed: int = 0) -> np.ndarray:
    """Vehicle-frame points spread over the camera's field of view, 2-80 m away."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform([0, 0], [camera.width - 1, camera.height - 1], size=(n, 2))
    rays = camera.pixel_to_ray(uv)
    points_cam = rays * rng.uniform(2, 80, size=(n, 1))
    return points_cam @ camera.R_vehicle_camera.T + camera.position


def _opencv_pose(camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    R = camera.R_vehicle_camera.T  # vehicle -> camera
    return cv2.Rodrigues(R)[0], -R @ camera.position


@pytest.mark.parametrize("distortion,coeffs", [("none", ()), ("plumb_bob", PLUMB_BOB),
                                                ("rational_polynomial", RATIONAL)])
def test_project_matches_cv2_projectPoints(distortion, coeffs):
    camera = _camera(distortion, coeffs)
    points = _points_in_view(camera)
    uv, valid = camera.project(points)
    rvec, tvec = _opencv_pose(camera)
    expected = cv2.projectPoints(points, rvec, tvec, camera.K, camera.dist)[0].reshape(-1, 2)
    assert valid.all()
    np.testing.assert_allclose(uv, expected, atol=1e-6, rtol=0)


def test_project_matches_cv2_fisheye_projectPoints():
    camera = _camera("equidistant", FISHEYE, fx=480.0, fy=480.0)
    points = _points_in_view(camera)
    uv, valid = camera.project(points)
    rvec, tvec = _opencv_pose(camera)
    expected = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), rvec, tvec, camera.K,
                                         camera.dist)[0].reshape(-1, 2)
    assert valid.all()
    np.testing.assert_allclose(uv, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("distortion,coeffs", [("none", ()), ("plumb_bob", PLUMB_BOB),
                                                ("rational_polynomial", RATIONAL), ("equidistant", FISHEYE)])
def test_pixel_to_ray_round_trips_through_project(distortion, coeffs):
    camera = _camera(distortion, coeffs, fx=1000.0, fy=1005.0)  # corners inside the lens model's range
    u, v = np.meshgrid(np.linspace(0, camera.width - 1, 41), np.linspace(0, camera.height - 1, 27))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    rays = camera.pixel_to_ray(uv)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1.0, atol=1e-12)
    back, valid = camera.project_camera(rays * 7.5)
    assert valid.all()
    np.testing.assert_allclose(back, uv, atol=1e-7, rtol=0)
    xy = camera.undistort_points(uv)
    np.testing.assert_allclose(xy, rays[:, :2] / rays[:, 2:], atol=1e-12)


def test_undistort_points_agrees_with_cv2():
    camera = _camera("plumb_bob", (-0.05, 0.01, 0.0003, -0.0002, 0.0))  # mild: cv2's fixed point converges
    uv = np.random.default_rng(1).uniform([0, 0], [1279, 799], size=(200, 2))
    expected = cv2.undistortPoints(uv.reshape(-1, 1, 2), camera.K, camera.dist, None, None, None,
                                   (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14))
    np.testing.assert_allclose(camera.undistort_points(uv), expected.reshape(-1, 2), atol=1e-9)


def test_points_behind_or_past_the_lens_range_are_invalid():
    camera = _camera("plumb_bob", PLUMB_BOB, T_vehicle_camera=np.eye(4))
    assert camera.max_angle < np.radians(80)
    past_fold = np.tan(camera.max_angle + np.radians(5))
    uv, valid = camera.project_camera(np.array([[0.0, 0.0, -5.0], [0.0, 0.0, 5.0], [past_fold, 0.0, 1.0]]))
    assert valid.tolist() == [False, True, False]
    assert np.isnan(uv[0]).all() and np.isfinite(uv[1:]).all()
    # The fold: far off-axis points come back inside the image under plumb_bob; they must not be trusted.
    assert 0 <= uv[2, 0] < camera.width
    # Pixels whose only preimage is past the fold have no ray.
    assert np.isnan(camera.pixel_to_ray(np.array([[camera.cx + 5000.0, camera.cy]]))).all()


def test_pixel_to_ground_recovers_ground_points():
    camera = _camera("rational_polynomial", RATIONAL)
    rng = np.random.default_rng(2)
    ground = np.column_stack([rng.uniform(5, 60, 300), rng.uniform(-10, 20, 300), np.zeros(300)])
    uv, valid = camera.project(ground)
    inside = valid & (uv[:, 0] >= 0) & (uv[:, 0] <= 1279) & (uv[:, 1] >= 0) & (uv[:, 1] <= 799)
    assert inside.sum() > 50
    points, ok = camera.pixel_to_ground(uv[inside])
    assert ok.all()
    np.testing.assert_allclose(points, ground[inside], atol=1e-6)
    # A raised plane, and a pixel above the horizon that never meets the ground.
    points, ok = camera.pixel_to_ground(uv[inside][:3], ground_z=0.5)
    np.testing.assert_allclose(points[:, 2], 0.5, atol=1e-9)
    assert (np.linalg.norm(points[:, :2] - camera.position[:2], axis=1)
            < np.linalg.norm(ground[inside][:3, :2] - camera.position[:2], axis=1)).all()
    sky = camera.project(np.array([[200.0, 0.0, 30.0]]))[0]
    points, ok = camera.pixel_to_ground(sky)
    assert not ok[0] and np.isnan(points[0]).all()


def test_mount_transform_axes():
    T = mount_transform(1.0, 2.0, 3.0, yaw_deg=90.0)  # looking left
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)   # optical axis -> vehicle +y
    np.testing.assert_allclose(T[:3, 0], [1, 0, 0], atol=1e-12)   # image right -> vehicle forward
    np.testing.assert_allclose(T[:3, 3], [1, 2, 3])
    down = mount_transform(0, 0, 0, pitch_deg=10.0)[:3, 2]
    assert down[2] < 0 and down[0] > 0


@pytest.mark.parametrize("field,value,message", [
    ("fx", -1.0, "focal length must be > 0"),
    ("fy", 0.0, "focal length must be > 0"),
    ("cx", float("nan"), "must be finite"),
    ("width", 0, "positive integer"),
    ("height", 10.5, "positive integer"),
    ("distortion", "kannala", "unknown model 'kannala'"),
    ("coeffs", (0.1, 0.2), "takes 5 coefficients, got 2"),
    ("coeffs", (0.1, 0.2, 0.0, 0.0, float("inf")), "must be finite"),
    ("T_vehicle_camera", np.eye(3), "must be a 4x4 matrix"),
    ("T_vehicle_camera", np.diag([1.0, 1.0, 1.1, 1.0]), "not orthonormal"),
    ("T_vehicle_camera", np.diag([1.0, 1.0, -1.0, 1.0]), "not orthonormal"),
])
def test_validation_names_camera_and_field(field, value, message):
    with pytest.raises(CalibrationError) as e:
        dataclasses.replace(_camera("plumb_bob", PLUMB_BOB), **{field: value})
    assert "'cam'" in str(e.value) and repr(field) in str(e.value) and message in str(e.value)


def test_camera_is_immutable_and_compares_by_value():
    a = _camera("plumb_bob", PLUMB_BOB)
    b = _camera("plumb_bob", PLUMB_BOB)
    assert a == b and a != dataclasses.replace(a, fx=701.0)
    with pytest.raises(ValueError):
        a.T_vehicle_camera[0, 3] = 5.0


@pytest.mark.parametrize("n", range(1, 7))
def test_default_rig(n):
    rig = default_rig(n)
    assert isinstance(rig, Rig) and len(rig) == n and rig.names[0] == "front"
    for camera in rig.cameras:
        # Every pixel unprojects (the image lies inside the lens model's one-to-one range).
        u, v = np.meshgrid(np.linspace(0, camera.width - 1, 33), np.linspace(0, camera.height - 1, 19))
        assert np.isfinite(camera.pixel_to_ray(np.stack([u.ravel(), v.ravel()], axis=1))).all()
        assert 1.3 <= camera.position[2] <= 1.5


def test_default_rig_fields_of_view():
    rig = default_rig(3)
    assert rig.names == ("front", "front_left", "front_right")
    for name, hfov, yaw in (("front", 60, 0), ("front_left", 100, 55), ("front_right", 100, -55)):
        camera = rig[name]
        c = camera.cy
        rays = camera.pixel_to_ray(np.array([[-0.5, c], [camera.width - 0.5, c]])) @ camera.R_vehicle_camera.T
        yaws = np.degrees(np.arctan2(rays[:, 1], rays[:, 0]))
        assert abs((yaws[0] - yaws[1]) - hfov) < 1.0 and abs(yaws.mean() - yaw) < 1.0
    assert rig["front"].distortion == "plumb_bob" and abs(rig["front"].coeffs[0]) < 0.1
    assert abs(rig["front_left"].coeffs[0]) > 0.2
    with pytest.raises(ValueError):
        default_rig(7)


def test_rig_mapping_and_validation():
    rig = default_rig(3)
    assert list(rig) == list(rig.names) and rig["front_left"] is rig.cameras[1] and "rear" not in rig
    with pytest.raises(KeyError, match="rear"):
        rig["rear"]
    with pytest.raises(CalibrationError, match="'front' appears twice"):
        Rig([rig["front"], rig["front"]])
    with pytest.raises(CalibrationError, match="no cameras"):
        Rig([])
    assert Rig(rig.cameras) == rig and Rig(reversed(rig.cameras)) != rig
