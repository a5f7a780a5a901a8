"""Calibration file formats -> CameraModels, and the project's rig YAML writer (docs/calibration.md).

Read: the project's rig YAML, ROS camera_info YAML, OpenCV FileStorage YAML, Kalibr camchain YAML.
Every problem raises CalibrationError naming the file, the camera, the field and what is wrong.
Files are read and parsed by perception.yaml_io (bounded size and depth, no anchors / aliases, core tags
plus OpenCV's `!!opencv-matrix`), refused above MAX_FILE_BYTES.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calib.camera import DISTORTION_COEFF_COUNT, CameraModel, mount_transform, transform_problem
from perception.errors import CalibrationError
from perception.yaml_io import brief, decode_utf8, parse_yaml, read_limited

MAX_FILE_BYTES = 4 << 20
RIG_FORMAT = "perception-rig"
RIG_VERSION = 1
_RIG_CAMERA_KEYS = ("name", "width", "height", "fx", "fy", "cx", "cy", "distortion", "coeffs", "T_vehicle_camera")
# Intrinsics-only formats (ROS, OpenCV, Kalibr without IMU): the camera sits at the vehicle origin
# looking forward along x. Replace with the real mounting before using vehicle-frame geometry.
UNKNOWN_MOUNT = mount_transform(0.0, 0.0, 0.0)
_KALIBR_DISTORTION = {"radtan": "plumb_bob", "equidistant": "equidistant", "none": "none"}
_KALIBR_CAMERA = re.compile(r"cam(0|[1-9]\d{0,3})")


class _Where:
    """Error context: file, camera."""

    def __init__(self, file: str, camera: str | None = None):
        self.file, self.camera = file, camera

    def at(self, camera: str) -> _Where:
        return _Where(self.file, camera)

    def error(self, field: str | None, what: str) -> CalibrationError:
        parts = [self.file]
        if self.camera is not None:
            parts.append(f"camera {brief(self.camera)}")
        if field is not None:
            parts.append(f"field {brief(field)}")
        return CalibrationError(": ".join(parts + [what]))


def _mapping(value: Any, where: _Where, field: str | None) -> dict:
    if not isinstance(value, dict):
        raise where.error(field, f"expected a mapping, got {type(value).__name__}")
    return value


def _get(d: dict, key: str, where: _Where) -> Any:
    if key not in d:
        raise where.error(key, "missing key")
    return d[key]


def _is_numbers(value: Any) -> bool:
    """A number or a (nested) list of numbers: no strings, booleans or mappings that numpy would convert."""
    if isinstance(value, list):
        return all(_is_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _floats(value: Any, shape: tuple[int, ...], where: _Where, field: str) -> np.ndarray:
    """A finite float array of exactly `shape` (a flat list of the right length is reshaped)."""
    if not isinstance(value, list) or not _is_numbers(value):
        raise where.error(field, f"expected numbers, got {brief(value)}")
    try:
        array = np.array(value, dtype=np.float64)
    except ValueError:  # ragged
        raise where.error(field, f"expected numbers, got {brief(value)}") from None
    if array.size != int(np.prod(shape)) or (array.ndim > 1 and array.shape != shape):
        expected = f"{shape[0]} values" if len(shape) == 1 else f"a {'x'.join(map(str, shape))} matrix"
        raise where.error(field, f"expected {expected}, got {array.size} values"
                                 + (f" shaped {'x'.join(map(str, array.shape))}" if array.ndim > 1 else ""))
    if not np.all(np.isfinite(array)):
        raise where.error(field, f"non-finite value in {brief(array.ravel().tolist())}")
    return array.reshape(shape)


def _int(value: Any, where: _Where, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise where.error(field, f"expected a positive integer, got {brief(value)}")
    return value


def _str(value: Any, where: _Where, field: str) -> str:
    if not isinstance(value, str):
        raise where.error(field, f"expected a string, got {brief(value)}")
    return value


def _number(value: Any, where: _Where, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(field, f"expected a number, got {brief(value)}")
    return float(value)


def _transform(value: Any, where: _Where, field: str) -> np.ndarray:
    T = _floats(value, (4, 4), where, field)
    problem = transform_problem(T)
    if problem:
        raise where.error(field, problem)
    return T


def _camera(where: _Where, **fields: Any) -> CameraModel:
    """CameraModel, with its own validation errors prefixed by the file."""
    try:
        return CameraModel(**fields)
    except CalibrationError as e:
        raise CalibrationError(f"{where.file}: {e}") from None


# ---- the project's rig YAML ---------------------------------------------------------------------------
def cameras_to_yaml(cameras: tuple[CameraModel, ...]) -> str:
    """The project's rig YAML. Floats are written as Python's shortest repr, so reading gives back the
    identical values."""
    doc = {"format": RIG_FORMAT, "version": RIG_VERSION, "cameras": [
        {"name": c.name, "width": c.width, "height": c.height, "fx": c.fx, "fy": c.fy, "cx": c.cx, "cy": c.cy,
         "distortion": c.distortion, "coeffs": list(c.coeffs),
         "T_vehicle_camera": [[float(x) for x in row] for row in c.T_vehicle_camera]}
        for c in cameras]}
    return ("# perception camera rig (docs/calibration.md). Vehicle frame ISO 8855, camera frame OpenCV.\n"
            + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1000))


def _read_rig(doc: dict, where: _Where) -> list[CameraModel]:
    if doc.get("version") != RIG_VERSION:
        raise where.error("version", f"unsupported rig format version {brief(doc.get('version'))} "
                                     f"(this build reads {RIG_VERSION})")
    cameras = _get(doc, "cameras", where)
    if not isinstance(cameras, list) or not cameras:
        raise where.error("cameras", "expected a non-empty list of cameras")
    out = []
    for index, entry in enumerate(cameras):
        entry = _mapping(entry, where.at(f"#{index}"), None)
        name = _str(entry.get("name", f"#{index}"), where.at(f"#{index}"), "name")
        here = where.at(name)
        for key in _RIG_CAMERA_KEYS:
            _get(entry, key, here)
        unknown = sorted(str(k) for k in set(entry) - set(_RIG_CAMERA_KEYS))
        if unknown:
            raise here.error(unknown[0], f"unknown key (expected: {', '.join(_RIG_CAMERA_KEYS)})")
        coeffs = entry["coeffs"]
        out.append(_camera(
            where, name=name, width=_int(entry["width"], here, "width"), height=_int(entry["height"], here, "height"),
            **{k: _number(entry[k], here, k) for k in ("fx", "fy", "cx", "cy")},
            distortion=_str(entry["distortion"], here, "distortion"),
            coeffs=tuple(_floats(coeffs, (len(coeffs),) if isinstance(coeffs, list) else (0,), here, "coeffs")),
            T_vehicle_camera=_transform(entry["T_vehicle_camera"], here, "T_vehicle_camera")))
    return out


# ---- ROS camera_info / OpenCV FileStorage ---------------------------------------------------------------
# OpenCV's `!!opencv-matrix` reads as the {rows, cols, dt, data} mapping ROS also uses.
_OPENCV_TAGS = {"tag:yaml.org,2002:opencv-matrix": lambda loader, node: loader.construct_mapping(node, deep=True)}


def _matrix_field(doc: dict, key: str, shape: tuple[int, int] | None, where: _Where) -> np.ndarray:
    """A {rows, cols, data} matrix (ROS and OpenCV); shape None = any single row or column."""
    m = _mapping(_get(doc, key, where), where, key)
    rows, cols = (_int(_get(m, k, where), where, f"{key}.{k}") for k in ("rows", "cols"))
    if shape is not None and (rows, cols) != shape:
        raise where.error(key, f"expected a {shape[0]}x{shape[1]} matrix, got {rows}x{cols}")
    if shape is None and min(rows, cols) != 1:
        raise where.error(key, f"expected a single row or column, got {rows}x{cols}")
    data = _get(m, "data", where)
    if not isinstance(data, list):
        raise where.error(f"{key}.data", f"expected a list of numbers, got {brief(data)}")
    return _floats(data, (rows, cols), where, key)


def _read_camera_info(doc: dict, where: _Where, default_name: str) -> list[CameraModel]:
    """ROS camera_info YAML (camera_calibration_parsers) or OpenCV's calibration sample FileStorage.
    OpenCV files carry no model name: 4 or 5 coefficients are plumb_bob (OpenCV reads 4 as k3 = 0),
    8 rational_polynomial; a `distortion_model` key, where present, decides."""
    name = _str(doc.get("camera_name") or default_name, where, "camera_name")
    here = where.at(name)
    width, height = (_int(_get(doc, k, here), here, k) for k in ("image_width", "image_height"))
    K = _matrix_field(doc, "camera_matrix", (3, 3), here)
    if K[0, 1] != 0 or K[1, 0] != 0 or not np.array_equal(K[2], [0.0, 0.0, 1.0]):
        raise here.error("camera_matrix", f"expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                                          f"(skew is not supported), got {K.tolist()}")
    coeffs = _matrix_field(doc, "distortion_coefficients", None, here).ravel()
    model = doc.get("distortion_model")
    if model is not None:
        model = _str(model, here, "distortion_model")
    else:
        model = {0: "none", 4: "plumb_bob", 5: "plumb_bob", 8: "rational_polynomial"}.get(coeffs.size)
        if model is None:
            raise here.error("distortion_coefficients", f"{coeffs.size} coefficients: supported are 4/5 "
                                                        "(plumb_bob) and 8 (rational_polynomial)")
        if coeffs.size == 4:
            coeffs = np.append(coeffs, 0.0)
    if model == "fisheye":
        model = "equidistant"
    if model not in DISTORTION_COEFF_COUNT:
        raise here.error("distortion_model", f"unknown model {model!r}, expected one of "
                                             f"{sorted(DISTORTION_COEFF_COUNT)}")
    if model == "none" and not np.any(coeffs):
        coeffs = np.zeros(0)
    if coeffs.size != DISTORTION_COEFF_COUNT[model]:
        raise here.error("distortion_coefficients", f"{model} takes {DISTORTION_COEFF_COUNT[model]} "
                                                    f"coefficients, got {coeffs.size}")
    return [_camera(where, name=name, width=width, height=height, fx=K[0, 0], fy=K[1, 1],
                    cx=K[0, 2], cy=K[1, 2], distortion=model, coeffs=tuple(coeffs),
                    T_vehicle_camera=UNKNOWN_MOUNT)]


# ---- Kalibr camchain ----------------------------------------------------------------------------------
def _read_kalibr(doc: dict, where: _Where) -> list[CameraModel]:
    """cam0..camN. Extrinsics: T_cam_imu where given (the IMU frame is taken as the vehicle frame), else
    chained from the previous camera through T_cn_cnm1 (cam0 without IMU: UNKNOWN_MOUNT)."""
    matches = (_KALIBR_CAMERA.fullmatch(str(key)) for key in doc)
    indices = sorted(int(m.group(1)) for m in matches if m)
    if indices != list(range(len(indices))):
        raise where.error(None, f"Kalibr cameras must be cam0..camN without gaps, got "
                                f"{', '.join(f'cam{i}' for i in indices)}")
    cameras: list[CameraModel] = []
    for i in indices:
        name = f"cam{i}"
        here = where.at(name)
        cam = _mapping(doc[name], here, None)
        if _get(cam, "camera_model", here) != "pinhole":
            raise here.error("camera_model", f"unsupported projection {brief(cam['camera_model'])} (only pinhole)")
        fx, fy, cx, cy = _floats(_get(cam, "intrinsics", here), (4,), here, "intrinsics")
        width, height = _floats(_get(cam, "resolution", here), (2,), here, "resolution")
        if width != int(width) or height != int(height):
            raise here.error("resolution", f"expected integer [width, height], got {brief(cam['resolution'])}")
        kalibr_model = _str(_get(cam, "distortion_model", here), here, "distortion_model")
        model = _KALIBR_DISTORTION.get(kalibr_model)
        if model is None:
            raise here.error("distortion_model", f"unknown model {kalibr_model!r}, expected one of "
                                                 f"{sorted(_KALIBR_DISTORTION)}")
        expected = {"plumb_bob": 4, "equidistant": 4, "none": 0}[model]
        raw = cam.get("distortion_coeffs", [])
        coeffs = _floats(raw, (len(raw),) if isinstance(raw, list) else (0,), here, "distortion_coeffs")
        if coeffs.size != expected:
            raise here.error("distortion_coeffs", f"{kalibr_model} takes {expected} coefficients, "
                                                  f"got {coeffs.size}")
        if model == "plumb_bob":
            coeffs = np.append(coeffs, 0.0)  # radtan = k1 k2 p1 p2
        if "T_cam_imu" in cam:
            T_vehicle_camera = np.linalg.inv(_transform(cam["T_cam_imu"], here, "T_cam_imu"))
        elif i == 0:
            T_vehicle_camera = UNKNOWN_MOUNT
        else:
            T_cn_cnm1 = _transform(_get(cam, "T_cn_cnm1", here), here, "T_cn_cnm1")
            T_vehicle_camera = cameras[-1].T_vehicle_camera @ np.linalg.inv(T_cn_cnm1)
        if i == 0 and "T_cn_cnm1" in cam:
            raise here.error("T_cn_cnm1", "cam0 has no previous camera")
        T_vehicle_camera[3] = (0.0, 0.0, 0.0, 1.0)  # exact after inversion
        cameras.append(_camera(where, name=name, width=int(width), height=int(height), fx=fx, fy=fy, cx=cx,
                               cy=cy, distortion=model, coeffs=tuple(coeffs), T_vehicle_camera=T_vehicle_camera))
    return cameras


# ---- detection ----------------------------------------------------------------------------------------
def read_cameras_text(text: str, where: str) -> list[CameraModel]:
    """Cameras from the text of any supported file; `where` names the file in errors (its stem names a
    single camera whose file has no camera name)."""
    if len(text) > MAX_FILE_BYTES:
        raise CalibrationError(f"{where}: file is larger than {MAX_FILE_BYTES} bytes; not a calibration file")
    here = _Where(where)
    opencv = text.lstrip().startswith("%YAML:") or "!!opencv-matrix" in text
    if opencv:
        text = re.sub(r"\A\s*%YAML:\d+\.\d+[^\n]*\n", "", text)  # PyYAML rejects OpenCV's directive
    doc = _mapping(parse_yaml(text, where, CalibrationError, _OPENCV_TAGS if opencv else None), here, None)
    if doc.get("format") == RIG_FORMAT:
        return _read_rig(doc, here)
    if {"camera_matrix", "image_width", "distortion_coefficients"} & doc.keys():
        return _read_camera_info(doc, here, Path(where).stem or "camera")
    if any(_KALIBR_CAMERA.fullmatch(str(k)) for k in doc):
        return _read_kalibr(doc, here)
    raise here.error(None, f"unrecognised calibration format (expected the project rig YAML with "
                           f"'format: {RIG_FORMAT}', ROS camera_info / OpenCV FileStorage with 'camera_matrix', "
                           f"or a Kalibr camchain with cam0...)")


def read_cameras(path: str | Path) -> list[CameraModel]:
    data = read_limited(path, MAX_FILE_BYTES, CalibrationError)
    return read_cameras_text(decode_utf8(data, str(path), CalibrationError), str(path))
