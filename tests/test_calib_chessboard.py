"""`perception calib chessboard`: real OpenCV sample images, synthetic renders of a known camera, errors."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from calib.camera import CameraModel
from calib.chessboard import calibrate_chessboard, find_corners
from calib.defaults import default_rig
from calib.rig import load_rig, save_rig
from perception.cli import main
from perception.errors import CalibrationError

SQUARE = 0.025


def _sample_images(shared_data, pattern="left[0-9][0-9].jpg"):
    return sorted(str(p) for p in (shared_data / "opencv-samples").glob(pattern))


def test_real_images_match_the_reference_calibration(shared_data, tmp_path, capsys):
    images = _sample_images(shared_data, "left*.jpg")  # includes left.jpg: a different scene, no board
    out = tmp_path / "rig.yaml"
    assert main(["calib", "chessboard", *images, "--board", "9x6", "--square", "0.025", "--out", str(out),
                 "--name", "left"]) == 0
    printed = capsys.readouterr()
    assert "left.jpg: no 9x6 chessboard found, skipped" in printed.err
    rms = float(re.search(r"RMS reprojection error: ([0-9.]+) px", printed.out).group(1))
    assert rms <= 0.5
    camera = load_rig(out)["left"]
    reference = load_rig(shared_data / "opencv-samples" / "left_intrinsics.yml").cameras[0]
    assert (camera.width, camera.height, camera.distortion) == (640, 480, "plumb_bob")
    for field in ("fx", "fy", "cx", "cy"):
        assert getattr(camera, field) == pytest.approx(getattr(reference, field), rel=0.01), field
    assert f"fx {camera.fx:.3f}" in printed.out


def _render_views(camera: CameraModel, directory, count=8, seed=3) -> list[str]:
    """Images of a 9x6 board with 25 mm squares seen by `camera` from random poses 0.4-0.5 m away."""
    u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
    rays = camera.pixel_to_ray(np.stack([u.ravel(), v.ravel()], axis=1))
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(count):
        R = cv2.Rodrigues(np.radians(rng.uniform(-30, 30, 3)))[0]  # board -> camera
        t = np.array([rng.uniform(-0.08, 0.0), rng.uniform(-0.06, 0.0), rng.uniform(0.38, 0.5)])
        t -= R @ np.array([4 * SQUARE, 2.5 * SQUARE, 0.0])
        distance = (R[:, 2] @ t) / (rays @ R[:, 2])
        a, b = (((distance[:, None] * rays) - t) @ R)[:, :2].T / SQUARE  # board coordinates, squares
        paper = (a > -2) & (a < 10) & (b > -2) & (b < 7)
        black = (a > -1) & (a < 9) & (b > -1) & (b < 6) & ((np.floor(a) + np.floor(b)) % 2 == 0)
        image = np.where(paper, np.where(black, 30.0, 220.0), 110.0).reshape(camera.height, camera.width)
        image = cv2.GaussianBlur(image, (0, 0), 0.8) + rng.normal(0, 2, image.shape)
        paths.append(str(directory / f"view{k}.png"))
        cv2.imwrite(paths[-1], np.clip(image, 0, 255).astype(np.uint8))
    return paths


def test_recovers_a_known_camera(tmp_path):
    truth = CameraModel("synthetic", 640, 480, 520.0, 522.0, 322.5, 236.5, "plumb_bob",
                        (-0.25, 0.08, 0.001, -0.0007, 0.0))
    *views, held_out = _render_views(truth, tmp_path, count=9)
    result = calibrate_chessboard(views, (9, 6), SQUARE, "synthetic")
    assert len(result.views) == 8 and result.rms < 0.3
    camera = result.camera
    assert camera.fx == pytest.approx(520.0, rel=0.005) and camera.fy == pytest.approx(522.0, rel=0.005)
    assert abs(camera.cx - 322.5) < 2 and abs(camera.cy - 236.5) < 2
    # The recovered model explains a view it was not fitted to.
    corners = find_corners(cv2.imread(held_out, cv2.IMREAD_GRAYSCALE), (9, 6)).reshape(-1, 2)
    grid = np.zeros((54, 3))
    grid[:, :2] = np.mgrid[0:9, 0:6].T.reshape(-1, 2) * SQUARE
    _, rvec, tvec = cv2.solvePnP(grid, corners, camera.K, camera.dist)
    predicted = cv2.projectPoints(grid, rvec, tvec, camera.K, camera.dist)[0].reshape(-1, 2)
    assert np.sqrt(np.mean(np.sum((predicted - corners) ** 2, axis=1))) < 0.3


def test_updates_a_camera_in_an_existing_rig(shared_data, tmp_path, capsys):
    rig = default_rig(3)
    out = tmp_path / "rig.yaml"
    save_rig(rig, out)
    images = _sample_images(shared_data)[:6]
    assert main(["calib", "chessboard", *images, "--board", "9x6", "--square", "0.025", "--out", str(out),
                 "--name", "front_left"]) == 0
    assert "replaced 'front_left' (extrinsics kept)" in capsys.readouterr().out
    updated = load_rig(out)
    assert updated.names == rig.names and updated["front"] == rig["front"] and updated["front_right"] == rig["front_right"]
    assert updated["front_left"].width == 640
    np.testing.assert_array_equal(updated["front_left"].T_vehicle_camera, rig["front_left"].T_vehicle_camera)


def test_errors(shared_data, tmp_path, capsys):
    images = _sample_images(shared_data)
    with pytest.raises(CalibrationError, match=r"found a 9x6 chessboard in 2 of 3 images; calibration needs at least 3"):
        calibrate_chessboard([*images[:2], str(shared_data / "opencv-samples" / "left.jpg")], (9, 6), SQUARE)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(images[0]), (480, 360), interpolation=cv2.INTER_AREA))
    with pytest.raises(CalibrationError, match=r"small.png: image is 480x360 but .*left01.jpg is 640x480"):
        calibrate_chessboard([images[0], str(small)], (9, 6), SQUARE)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(CalibrationError, match=r"notes.jpg: cannot read as an image"):
        calibrate_chessboard([str(text)], (9, 6), SQUARE)
    assert main(["calib", "chessboard", str(tmp_path / "missing.jpg"), "--board", "9x6", "--square", "0.025",
                 "--out", str(tmp_path / "rig.yaml")]) == 2
    assert "missing.jpg: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--board", "9by6", "--square", "0.025"], "expected COLUMNSxROWS"),
    (["--board", "1x6", "--square", "0.025"], "at least 2x2"),
    (["--board", "9x6", "--square", "-1"], "expected a positive number"),
    (["--board", "9x6", "--square", "nan"], "expected a positive number"),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        main(["calib", "chessboard", "a.jpg", *args, "--out", str(tmp_path / "rig.yaml")])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["calib", "--help"], ["calib", "chessboard", "--help"]])
def test_help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "chessboard" in capsys.readouterr().out
