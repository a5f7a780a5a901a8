"""Rig files: the project's YAML round trip, the foreign formats, and the error for every kind of bad file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from calib.camera import CameraModel, mount_transform
from calib.defaults import default_rig
from calib.formats import MAX_FILE_BYTES
from calib.rig import Rig, load_rig, rig_from_yaml_str, rig_to_yaml_str, save_rig
from perception.errors import CalibrationError

# Floats whose text form is easy to get wrong: non-terminating binary fractions, extremes, -0.0.
STRESS = (0.1 + 0.2, 1 / 3, 1e-300, 5e-324, 1.7976931348623157e308, 123456789.12345679, -0.0, 2.5e-17)


def _stress_rig() -> Rig:
    T = mount_transform(1.0 / 3, -0.1 - 0.2, 1.4000000000000001, yaw_deg=33.3, pitch_deg=1 / 7, roll_deg=-0.01)
    return Rig([
        CameraModel("a", 1920, 1080, 1000.0 + 1 / 3, 999.9999999999999, 959.5 + 1e-13, 539.1 + 0.2,
                    "plumb_bob", STRESS[:5], T),
        CameraModel("b", 640, 480, 0.1 + 0.2, 1e308, 320.0, -0.0, "rational_polynomial", STRESS),
        CameraModel("c", 1280, 800, 480.0, 480.5, 640.25, 400.125, "equidistant", STRESS[4:]),
        CameraModel("d", 64, 48, 50.0, 50.0, 31.5, 23.5),
    ])


def _float_texts(rig: Rig) -> list[str]:
    return [repr(float(x)) for c in rig.cameras
            for x in (c.fx, c.fy, c.cx, c.cy, *c.coeffs, *c.T_vehicle_camera.ravel())]


def test_project_yaml_round_trips_exactly(tmp_path):
    rig = _stress_rig()
    text = rig_to_yaml_str(rig)
    back = rig_from_yaml_str(text, "attachment")
    assert back == rig and back.names == rig.names
    assert _float_texts(back) == _float_texts(rig)  # bit-exact, -0.0 included
    assert rig_to_yaml_str(back) == text
    save_rig(rig, tmp_path / "rig.yaml")
    assert load_rig(tmp_path / "rig.yaml") == rig
    assert not (tmp_path / "rig.yaml.tmp").exists()


def test_default_rig_round_trips():
    rig = default_rig(6)
    assert rig_from_yaml_str(rig_to_yaml_str(rig), "default") == rig


ROS_CAMERA_INFO = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [430.21554, 0.0, 306.6486, 0.0, 430.53169, 227.22057, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.33758, 0.11161, 0.00191, -0.00000, 0.00000]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [356.6211, 0.0, 310.1395, 0.0, 0.0, 385.3338, 224.4839, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_ros_camera_info(tmp_path):
    path = tmp_path / "narrow.yaml"
    path.write_text(ROS_CAMERA_INFO)
    rig = load_rig(path)
    camera = rig["narrow_stereo"]
    assert (camera.width, camera.height, camera.distortion) == (640, 480, "plumb_bob")
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (430.21554, 430.53169, 306.6486, 227.22057)
    assert camera.coeffs == (-0.33758, 0.11161, 0.00191, 0.0, 0.0)
    np.testing.assert_array_equal(camera.T_vehicle_camera, mount_transform(0, 0, 0))


@pytest.mark.parametrize("model,n", [("rational_polynomial", 8), ("equidistant", 4)])
def test_ros_camera_info_other_models(model, n):
    coeffs = [0.01 * (i + 1) for i in range(n)]
    text = (ROS_CAMERA_INFO.replace("distortion_model: plumb_bob", f"distortion_model: {model}")
            .replace("cols: 5\n  data: [-0.33758, 0.11161, 0.00191, -0.00000, 0.00000]", f"cols: {n}\n  data: {coeffs}"))
    camera = rig_from_yaml_str(text, "info.yaml").cameras[0]
    assert camera.distortion == model and camera.coeffs == tuple(coeffs)


OPENCV_STORAGE = """\
%YAML:1.0
---
image_width: 1280
image_height: 720
camera_matrix: !!opencv-matrix
   rows: 3
   cols: 3
   dt: d
   data: [ 9.1e+02, 0., 6.395e+02, 0.,
       9.12e+02, 3.595e+02, 0., 0., 1. ]
distortion_coefficients: !!opencv-matrix
   rows: 1
   cols: {n}
   dt: d
   data: [ {coeffs} ]
"""


@pytest.mark.parametrize("coeffs,model,expected", [
    ("-0.3, 0.1, 0.001, -0.002", "plumb_bob", (-0.3, 0.1, 0.001, -0.002, 0.0)),
    ("-0.3, 0.1, 0.001, -0.002, 0.02", "plumb_bob", (-0.3, 0.1, 0.001, -0.002, 0.02)),
    ("0.9, 0.1, 0.001, -0.002, 0.0, 1.2, 0.2, 0.0", "rational_polynomial", (0.9, 0.1, 0.001, -0.002, 0.0, 1.2, 0.2, 0.0)),
])
def test_opencv_filestorage(tmp_path, coeffs, model, expected):
    path = tmp_path / "calib.yml"
    path.write_text(OPENCV_STORAGE.format(n=len(expected) if model != "plumb_bob" else coeffs.count(",") + 1,
                                          coeffs=coeffs))
    camera = load_rig(path)["calib"]
    assert camera.distortion == model and camera.coeffs == expected
    assert (camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height) == (910, 912, 639.5, 359.5, 1280, 720)
    # OpenCV reads its 4-coefficient vector as k3 = 0: both project alike.
    points = np.array([[0.3, -0.2, 1.0], [-0.5, 0.3, 2.0]])
    expected_uv = cv2.projectPoints(points, np.zeros(3), np.zeros(3), camera.K,
                                    np.array([float(c) for c in coeffs.split(",")]))[0].reshape(-1, 2)
    np.testing.assert_allclose(camera.project_camera(points)[0], expected_uv, atol=1e-6)


def test_opencv_sample_file(shared_data):
    path = shared_data / "opencv-samples" / "left_intrinsics.yml"
    camera = load_rig(path)["left_intrinsics"]
    assert (camera.width, camera.height, camera.distortion) == (640, 480, "plumb_bob")
    assert camera.fx == camera.fy == 5.3591573396163199e+02
    assert (camera.cx, camera.cy) == (3.4228315473308373e+02, 2.3557082909788173e+02)
    assert camera.coeffs[0] == -2.6637260909660682e-01 and camera.coeffs[4] == 2.3839153080878486e-01


def _kalibr_doc(with_imu: bool) -> dict:
    T_c0_imu = np.linalg.inv(mount_transform(0.2, 0.05, 0.1, yaw_deg=2.0, pitch_deg=1.0))
    T_c1_c0 = np.linalg.inv(mount_transform(0.0, -0.11, 0.0, yaw_deg=-3.0, pitch_deg=0.5)
                            @ np.linalg.inv(mount_transform(0, 0, 0)))  # cam1 sits 11 cm right of cam0
    cam0 = {"camera_model": "pinhole", "intrinsics": [461.629, 460.152, 362.680, 246.049],
            "distortion_model": "radtan", "distortion_coeffs": [-0.27695497, 0.06712482, 0.00087538, 0.00011556],
            "rostopic": "/cam0/image_raw", "resolution": [752, 480], "cam_overlaps": [1]}
    cam1 = {"camera_model": "pinhole", "intrinsics": [460.739, 459.504, 366.006, 249.055],
            "distortion_model": "equidistant", "distortion_coeffs": [0.01, -0.003, 0.0005, -0.0001],
            "T_cn_cnm1": T_c1_c0.tolist(), "rostopic": "/cam1/image_raw", "resolution": [752, 480]}
    if with_imu:
        cam0["T_cam_imu"] = T_c0_imu.tolist()
    return {"cam0": cam0, "cam1": cam1}


@pytest.mark.parametrize("with_imu", [False, True])
def test_kalibr_camchain(tmp_path, with_imu):
    doc = _kalibr_doc(with_imu)
    path = tmp_path / "camchain.yaml"
    path.write_text(yaml.safe_dump(doc))
    rig = load_rig(path)
    assert rig.names == ("cam0", "cam1")
    cam0, cam1 = rig.cameras
    assert cam0.distortion == "plumb_bob" and cam0.coeffs == (*doc["cam0"]["distortion_coeffs"], 0.0)
    assert cam1.distortion == "equidistant" and (cam1.fx, cam1.cy) == (460.739, 249.055)
    T_vehicle_c0 = np.linalg.inv(doc["cam0"]["T_cam_imu"]) if with_imu else mount_transform(0, 0, 0)
    np.testing.assert_allclose(cam0.T_vehicle_camera, T_vehicle_c0, atol=1e-12)
    # T_cn_cnm1 maps cam0-frame points into cam1's frame.
    p_c0 = np.array([0.3, -0.1, 4.0, 1.0])
    p_vehicle = cam0.T_vehicle_camera @ p_c0
    expected = cam1.project_camera((np.array(doc["cam1"]["T_cn_cnm1"]) @ p_c0)[None, :3])[0]
    np.testing.assert_allclose(cam1.project(p_vehicle[None, :3])[0], expected, atol=1e-9)


def test_kalibr_t_cam_imu_is_preferred_over_the_chain():
    doc = _kalibr_doc(with_imu=True)
    T_c1_imu = np.array(doc["cam1"]["T_cn_cnm1"]) @ np.array(doc["cam0"]["T_cam_imu"])
    doc["cam1"]["T_cam_imu"] = T_c1_imu.tolist()
    doc["cam1"]["T_cn_cnm1"] = np.eye(4).tolist()  # would put cam1 onto cam0 if used
    cam1 = rig_from_yaml_str(yaml.safe_dump(doc), "camchain.yaml")["cam1"]
    np.testing.assert_allclose(cam1.T_vehicle_camera, np.linalg.inv(T_c1_imu), atol=1e-12)


# ---- every kind of bad file -----------------------------------------------------------------------------
def _rig_doc() -> dict:
    return yaml.safe_load(rig_to_yaml_str(default_rig(2)))


def _mutate_rig(change):
    doc = _rig_doc()
    change(doc["cameras"][1])
    return yaml.safe_dump(doc)


BAD_RIG = [
    (lambda c: c.pop("fx"), "front_left", "fx", "missing key"),
    (lambda c: c.update(fx=-5.0), "front_left", "fx", "focal length must be > 0"),
    (lambda c: c.update(fy=0), "front_left", "fy", "focal length must be > 0"),
    (lambda c: c.update(cx=float("nan")), "front_left", "cx", "must be finite"),
    (lambda c: c.update(width=1920.5), "front_left", "width", "positive integer"),
    (lambda c: c.update(coeffs=[0.1, 0.2, 0.3]), "front_left", "coeffs", "takes 5 coefficients, got 3"),
    (lambda c: c.update(coeffs=[0.1, "x", 0, 0, 0]), "front_left", "coeffs", "expected numbers"),
    (lambda c: c.update(distortion="kannala_brandt"), "front_left", "distortion", "unknown model 'kannala_brandt'"),
    (lambda c: c.update(T_vehicle_camera=c["T_vehicle_camera"][:3]), "front_left", "T_vehicle_camera",
     "expected a 4x4 matrix, got 12 values shaped 3x4"),
    (lambda c: c["T_vehicle_camera"][0].__setitem__(3, float("inf")), "front_left", "T_vehicle_camera", "non-finite"),
    (lambda c: c["T_vehicle_camera"][0].__setitem__(0, 0.9), "front_left", "T_vehicle_camera", "not orthonormal"),
    (lambda c: c.update(T_vehicle_camera=np.diag([1.0, 1.0, -1.0, 1.0]).tolist()), "front_left",
     "T_vehicle_camera", "not orthonormal"),
    (lambda c: c.update(skew=0.0), "front_left", "skew", "unknown key"),
    (lambda c: c.update(name="front"), None, None, "'front' appears twice"),
]


@pytest.mark.parametrize("change,camera,field,what", BAD_RIG)
def test_bad_rig_yaml(tmp_path, change, camera, field, what):
    path = tmp_path / "rig.yaml"
    path.write_text(_mutate_rig(change))
    _assert_error(path, camera, field, what)


def test_bad_rig_version(tmp_path):
    doc = _rig_doc()
    doc["version"] = 7
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    _assert_error(path, None, "version", "unsupported rig format version 7")


BAD_ROS = [
    ("camera_matrix:\n  rows: 3\n  cols: 3\n  data: [430.21554, 0.0, 306.6486, 0.0, 430.53169, 227.22057, 0.0, 0.0, 1.0]\n",
     "", "camera_matrix", "missing key"),
    ("  rows: 3\n  cols: 3\n  data: [430.21554", "  rows: 2\n  cols: 3\n  data: [430.21554", "camera_matrix",
     "expected a 3x3 matrix, got 2x3"),
    ("430.21554, 0.0, 306.6486, 0.0,", "430.21554, 0.0, 306.6486,", "camera_matrix", "expected a 3x3 matrix, got 8 values"),
    ("430.21554, 0.0, 306.6486, 0.0,", "-430.21554, 0.0, 306.6486, 0.0,", "fx", "focal length must be > 0"),
    ("0.0, 430.53169", "0.0, .nan", "camera_matrix", "non-finite"),
    ("430.21554, 0.0, 306.6486", "430.21554, 1.5, 306.6486", "camera_matrix", "skew is not supported"),
    ("distortion_model: plumb_bob", "distortion_model: kb4", "distortion_model", "unknown model 'kb4'"),
    ("distortion_model: plumb_bob", "distortion_model: rational_polynomial", "distortion_coefficients",
     "rational_polynomial takes 8 coefficients, got 5"),
    ("image_width: 640", "image_width: -640", "image_width", "positive integer"),
]


@pytest.mark.parametrize("old,new,field,what", BAD_ROS)
def test_bad_ros_camera_info(tmp_path, old, new, field, what):
    assert old in ROS_CAMERA_INFO
    path = tmp_path / "info.yaml"
    path.write_text(ROS_CAMERA_INFO.replace(old, new, 1))
    _assert_error(path, "narrow_stereo", field, what)


def test_bad_opencv_storage(tmp_path):
    path = tmp_path / "calib.yml"
    path.write_text(OPENCV_STORAGE.format(n=5, coeffs="0.1, 0.2, 0.0, 0.0"))
    _assert_error(path, "calib", "distortion_coefficients", "expected a 1x5 matrix, got 4 values")
    path.write_text(OPENCV_STORAGE.format(n=6, coeffs="0.1, 0.2, 0.0, 0.0, 0.0, 0.0"))
    _assert_error(path, "calib", "distortion_coefficients", "6 coefficients: supported are")
    path.write_text(OPENCV_STORAGE.format(n=5, coeffs="0.1, 0.2, 0.0, 0.0, 0.0").replace("image_width: 1280\n", ""))
    _assert_error(path, "calib", "image_width", "missing key")


BAD_KALIBR = [
    ("cam1", lambda c: c.pop("intrinsics"), "intrinsics", "missing key"),
    ("cam0", lambda c: c.update(intrinsics=[1.0, 2.0, 3.0]), "intrinsics", "expected 4 values, got 3"),
    ("cam0", lambda c: c.update(intrinsics=[0.0, 460.0, 360.0, 240.0]), "fx", "focal length must be > 0"),
    ("cam1", lambda c: c["T_cn_cnm1"][1].__setitem__(1, 1.2), "T_cn_cnm1", "not orthonormal"),
    ("cam1", lambda c: c.pop("T_cn_cnm1"), "T_cn_cnm1", "missing key"),
    ("cam0", lambda c: c.update(T_cam_imu=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]), "T_cam_imu", "expected a 4x4 matrix"),
    ("cam0", lambda c: c.update(distortion_model="fov"), "distortion_model", "unknown model 'fov'"),
    ("cam1", lambda c: c.update(camera_model="omni"), "camera_model", "unsupported projection 'omni'"),
    ("cam0", lambda c: c["distortion_coeffs"].append(0.0), "distortion_coeffs", "radtan takes 4 coefficients, got 5"),
    ("cam0", lambda c: c.update(resolution=[752.5, 480]), "resolution", "expected integer"),
    ("cam0", lambda c: c.update(T_cn_cnm1=np.eye(4).tolist()), "T_cn_cnm1", "cam0 has no previous camera"),
]


@pytest.mark.parametrize("camera,change,field,what", BAD_KALIBR)
def test_bad_kalibr(tmp_path, camera, change, field, what):
    doc = _kalibr_doc(with_imu=True)
    change(doc[camera])
    path = tmp_path / "camchain.yaml"
    path.write_text(yaml.safe_dump(doc))
    _assert_error(path, camera, field, what)


def test_kalibr_camera_gap(tmp_path):
    doc = _kalibr_doc(with_imu=False)
    doc["cam2"] = doc.pop("cam1")
    path = tmp_path / "camchain.yaml"
    path.write_text(yaml.safe_dump(doc))
    _assert_error(path, None, None, "cam0..camN without gaps, got cam0, cam2")


@pytest.mark.parametrize("content,what", [
    ("cameras: [a, b", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping, got list"),
    ("intrinsics: [1, 2, 3, 4]\n", "unrecognised calibration format"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a UTF-8 text file"),
    ("x" * (MAX_FILE_BYTES + 1), "larger than"),
])
def test_not_a_calibration_file(tmp_path, content, what):
    path = tmp_path / "thing.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    _assert_error(path, None, None, what)


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nope.yaml", None, None, "cannot read")


def test_unsafe_yaml_tags_are_refused():
    text = "!!python/object/apply:os.system ['echo hacked']\n"
    with pytest.raises(CalibrationError, match="not valid YAML"):
        rig_from_yaml_str(text, "evil.yaml")
    with pytest.raises(CalibrationError, match="not valid YAML"):
        rig_from_yaml_str("%YAML:1.0\n---\n" + text, "evil.yml")


def _assert_error(path, camera, field, what):
    with pytest.raises(CalibrationError) as e:
        load_rig(path)
    message = str(e.value)
    assert message.startswith(str(path)), message
    if camera is not None:
        assert f"camera {camera!r}" in message, message
    if field is not None:
        assert f"field {field!r}" in message, message
    assert what in message, message
