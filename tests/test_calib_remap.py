"""The composite remap table against OpenCV's undistort + resize chain, and its coordinate transforms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calib.camera import CameraModel, mount_transform
from calib.defaults import default_rig
from calib.remap import build_remap

LENSES = {
    "plumb_bob": (-0.30, 0.09, 0.0008, -0.0004, -0.012),
    "rational_polynomial": (0.9, 0.1, 0.0004, 0.0002, -0.002, 1.2, 0.25, 0.01),
    "equidistant": (0.02, -0.006, 0.001, -0.0002),
}


def _camera(distortion: str) -> CameraModel:
    f = 300.0 if distortion == "equidistant" else 380.0
    return CameraModel("cam", 480, 270, f, f * 1.01, 241.2, 133.9, distortion, LENSES[distortion],
                       mount_transform(1.8, 0.2, 1.4, yaw_deg=10.0, pitch_deg=2.0))


def _smooth_image(camera: CameraModel) -> np.ndarray:
    y, x = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
    return (128 + 60 * np.sin(x / 11.0) * np.cos(y / 9.0) + 0.2 * x - 0.1 * y).astype(np.float32)


def _undistort(image: np.ndarray, camera: CameraModel) -> np.ndarray:
    if camera.distortion == "equidistant":
        return cv2.fisheye.undistortImage(image, camera.K, camera.dist, Knew=camera.K)
    return cv2.undistort(image, camera.K, camera.dist)


@pytest.mark.parametrize("distortion", sorted(LENSES))
@pytest.mark.parametrize("mode,net_w,net_h,offset", [("letterbox", 160, 96, (0, 3)), ("crop", 90, 90, (-35, 0))])
def test_table_reproduces_undistort_then_resize(distortion, mode, net_w, net_h, offset):
    camera = _camera(distortion)
    table = build_remap(camera, net_w, net_h, mode)
    image = _smooth_image(camera)
    ours = cv2.remap(image, table.map_x, table.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    # The chain: undistort to the virtual pinhole (same K), scale by 1/3, place at the offset.
    undistorted = _undistort(image, camera)
    undistorted_ok = _undistort(np.ones_like(image), camera) > 0.999
    small = cv2.resize(undistorted, (160, 90), interpolation=cv2.INTER_LINEAR)
    small_ok = cv2.resize(undistorted_ok.astype(np.uint8), (160, 90), interpolation=cv2.INTER_NEAREST) > 0
    expected = np.zeros((net_h, net_w), np.float32)
    expected_ok = np.zeros((net_h, net_w), bool)
    ox, oy = offset
    dst = np.s_[max(oy, 0):max(oy, 0) + 90, max(ox, 0):max(ox, 0) + 160]
    src = np.s_[max(-oy, 0):max(-oy, 0) + net_h, max(-ox, 0):max(-ox, 0) + net_w]
    expected[dst], expected_ok[dst] = small[src], small_ok[src]

    both = table.valid & expected_ok
    assert both.sum() > 0.6 * table.valid.size
    np.testing.assert_allclose(ours[both], expected[both], atol=0.25)
    # Where the chain has content the table has it too, apart from a one-pixel rim at the image edges.
    rim = cv2.dilate((~table.valid).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (expected_ok & ~table.valid & ~rim).any()
    if mode == "letterbox":
        assert (table.map_x[:3] == -1).all() and (table.map_x[93:] == -1).all()
        assert (table.map_y[:3] == -1).all() and (table.map_y[93:] == -1).all()


@pytest.mark.parametrize("distortion", sorted(LENSES))
@pytest.mark.parametrize("mode", ["letterbox", "crop"])
def test_table_entries_and_coordinate_transforms(distortion, mode):
    camera = _camera(distortion)
    table = build_remap(camera, 200, 128, mode)
    assert table.map_x.dtype == table.map_y.dtype == np.float32 and table.map_x.shape == (128, 200)
    valid = table.valid
    assert np.array_equal(valid, table.map_y >= 0)
    assert (table.map_x[~valid] == -1).all() and (table.map_y[~valid] == -1).all()
    assert (table.map_x[valid] <= camera.width - 1).all() and (table.map_y[valid] <= camera.height - 1).all()

    v, u = np.nonzero(valid)
    entries = table.net_to_source(np.stack([u, v], axis=1).astype(np.float64))
    np.testing.assert_allclose(entries, np.stack([table.map_x[valid], table.map_y[valid]], axis=1), atol=1e-3)

    rng = np.random.default_rng(0)
    src = rng.uniform([0, 0], [camera.width - 1, camera.height - 1], size=(300, 2))
    np.testing.assert_allclose(table.net_to_source(table.source_to_net(src)), src, atol=1e-6)

    # A vehicle-frame point seen by the source camera lands where the net camera projects it.
    points = camera.pixel_to_ray(src) * rng.uniform(3, 50, size=(300, 1))
    points = points @ camera.R_vehicle_camera.T + camera.position
    uv_src, ok_src = camera.project(points)
    uv_net, ok_net = table.net_camera.project(points)
    assert ok_src.all() and ok_net.all()
    np.testing.assert_allclose(table.source_to_net(uv_src), uv_net, atol=1e-6)

    net = table.net_camera
    assert (net.width, net.height, net.distortion, net.name) == (200, 128, "none", "cam")
    assert np.array_equal(net.T_vehicle_camera, camera.T_vehicle_camera)


def test_pixel_centre_convention_without_distortion():
    camera = CameraModel("pinhole", 640, 480, 500.0, 500.0, 319.5, 239.5)
    same = build_remap(camera, 640, 480)
    u, v = np.meshgrid(np.arange(640, dtype=np.float32), np.arange(480, dtype=np.float32))
    assert np.array_equal(same.map_x, u) and np.array_equal(same.map_y, v)
    half = build_remap(camera, 320, 240)
    assert half.map_x[0, 0] == 0.5 and half.map_x[0, 1] == 2.5 and half.map_y[239, 319] == 478.5
    # Letterbox 640x480 into 320x320: s = 0.5, 40-pixel bars top and bottom.
    box = build_remap(camera, 320, 320)
    assert (box.map_y[:40] == -1).all() and (box.map_y[280:] == -1).all() and (box.map_y[40:280] >= 0).all()
    assert box.map_y[40, 0] == 0.5
    crop = build_remap(camera, 320, 320, "crop")  # s = 320/480, 53.3 columns cut each side
    assert crop.valid.all()
    assert crop.map_x[0, 0] == pytest.approx((0.5 + 320 * 2 / 3 - 160) * 1.5 - 0.5, abs=1e-4)


def test_default_rig_tables_cover_the_network_input():
    for camera in default_rig(6).cameras:
        table = build_remap(camera, 640, 384, "letterbox")
        s = min(640 / camera.width, 384 / camera.height)
        content_rows = round(camera.height * s)
        assert table.valid.mean() > 0.8 * content_rows / 384, camera.name


def test_bad_arguments():
    camera = CameraModel("pinhole", 640, 480, 500.0, 500.0, 319.5, 239.5)
    with pytest.raises(ValueError, match="mode"):
        build_remap(camera, 320, 240, "stretch")
    with pytest.raises(ValueError, match="positive"):
        build_remap(camera, 0, 240)
