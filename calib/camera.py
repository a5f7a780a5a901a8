"""Camera model: pinhole intrinsics, lens distortion and the camera's pose on the vehicle.

Frames (docs/ARCHITECTURE.md): vehicle = ISO 8855 (x forward, y left, z up, metres, origin on the ground
under the rear axle); camera = OpenCV optical (x right, y down, z forward). `T_vehicle_camera` maps
camera-frame points to vehicle-frame points. Pixel centres sit at integer coordinates.

Distortion models, coefficients in OpenCV order:
- "none": ()
- "plumb_bob": (k1, k2, p1, p2, k3)                                  == cv2.projectPoints
- "rational_polynomial": (k1, k2, p1, p2, k3, k4, k5, k6)            == cv2.projectPoints
- "equidistant": (k1, k2, k3, k4), theta_d = theta (1 + k1 t^2 + ...) == cv2.fisheye.projectPoints

A polynomial lens model folds back on itself past some angle from the optical axis (the projected radius
stops growing). `max_angle` is the first such angle; points beyond it are reported invalid by `project`
and never produced by `pixel_to_ray`, so far-off-axis points cannot wrap into the image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from perception.errors import CalibrationError

DISTORTION_COEFF_COUNT = {"none": 0, "plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}

_NEWTON_ITERATIONS = 30
_NEWTON_TOLERANCE = 1e-12  # normalized image units
_ROTATION_TOLERANCE = 1e-6


def mount_transform(x: float, y: float, z: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                    roll_deg: float = 0.0) -> np.ndarray:
    """`T_vehicle_camera` of a camera at (x, y, z) in the vehicle frame looking along the vehicle's x axis
    turned by yaw (left positive), pitch (down positive) and roll (about the viewing direction,
    right side down positive), ISO 8855 Tait-Bryan angles applied z-y-x."""
    yaw, pitch, roll = np.radians([yaw_deg, pitch_deg, roll_deg])
    cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    # Columns: the camera's x (right), y (down), z (forward) axes in a vehicle looking along +x.
    optical_to_vehicle = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    T = np.eye(4)
    T[:3, :3] = rz @ ry @ rx @ optical_to_vehicle
    T[:3, 3] = (x, y, z)
    return T


def transform_problem(T: np.ndarray) -> str | None:
    """What is wrong with a 4x4 rigid transform, or None."""
    if T.shape != (4, 4):
        return f"must be a 4x4 matrix, got shape {T.shape}"
    if not np.all(np.isfinite(T)):
        return "must be finite"
    if not np.array_equal(T[3], [0.0, 0.0, 0.0, 1.0]):
        return f"last row must be [0, 0, 0, 1], got {T[3].tolist()}"
    R = T[:3, :3]
    orth_error = np.abs(R.T @ R - np.eye(3)).max()
    if orth_error > _ROTATION_TOLERANCE or np.linalg.det(R) < 0:
        return (f"rotation is not orthonormal with det +1 "
                f"(|R^T R - I| = {orth_error:.2g}, det = {np.linalg.det(R):.6g})")
    return None


@dataclass(frozen=True, eq=False)
class CameraModel:
    """One calibrated camera. Validates itself; errors name the camera and the field."""

    name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: str = "none"
    coeffs: tuple[float, ...] = ()
    T_vehicle_camera: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        def fail(field_name: str, what: str) -> CalibrationError:
            return CalibrationError(f"camera {self.name!r}: field {field_name!r}: {what}")

        if not isinstance(self.name, str) or not self.name:
            raise fail("name", "must be a non-empty string")
        for key in ("width", "height"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise fail(key, f"must be a positive integer, got {value!r}")
            object.__setattr__(self, key, int(value))
        for key in ("fx", "fy", "cx", "cy"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise fail(key, f"must be a number, got {value!r}")
            if not np.isfinite(value):
                raise fail(key, f"must be finite, got {value!r}")
            object.__setattr__(self, key, float(value))
        for key in ("fx", "fy"):
            if getattr(self, key) <= 0:
                raise fail(key, f"focal length must be > 0, got {getattr(self, key)!r}")
        if self.distortion not in DISTORTION_COEFF_COUNT:
            raise fail("distortion", f"unknown model {self.distortion!r}, expected one of "
                                     f"{sorted(DISTORTION_COEFF_COUNT)}")
        try:
            coeffs = np.asarray(self.coeffs, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise fail("coeffs", f"must be a list of numbers, got {self.coeffs!r}") from None
        expected = DISTORTION_COEFF_COUNT[self.distortion]
        if coeffs.size != expected:
            raise fail("coeffs", f"distortion {self.distortion!r} takes {expected} coefficients, got {coeffs.size}")
        if not np.all(np.isfinite(coeffs)):
            raise fail("coeffs", f"must be finite, got {coeffs.tolist()}")
        object.__setattr__(self, "coeffs", tuple(float(c) for c in coeffs))
        try:
            T = np.array(self.T_vehicle_camera, dtype=np.float64)
        except (TypeError, ValueError):
            raise fail("T_vehicle_camera", "must be a 4x4 matrix of numbers") from None
        problem = transform_problem(T)
        if problem:
            raise fail("T_vehicle_camera", problem)
        T.setflags(write=False)
        object.__setattr__(self, "T_vehicle_camera", T)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self)
                   if f.name != "T_vehicle_camera") and np.array_equal(self.T_vehicle_camera, other.T_vehicle_camera)

    __hash__ = None  # type: ignore[assignment]

    # ---- matrices --------------------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist(self) -> np.ndarray:
        """Distortion coefficients in OpenCV order (empty for "none")."""
        return np.array(self.coeffs, dtype=np.float64)

    @property
    def R_vehicle_camera(self) -> np.ndarray:
        return self.T_vehicle_camera[:3, :3]

    @property
    def position(self) -> np.ndarray:
        """Camera centre in the vehicle frame."""
        return self.T_vehicle_camera[:3, 3]

    # ---- lens model ------------------------------------------------------------------------------------
    @cached_property
    def max_angle(self) -> float:
        """Angle (rad) from the optical axis up to which the lens model is one-to-one (< pi/2)."""
        theta = np.linspace(0.0, np.pi / 2, 20001)[:-1]
        if self.distortion == "none":
            return float(theta[-1])
        if self.distortion == "equidistant":
            radius = self._theta_d(theta)
        else:
            r = np.tan(theta)
            radial, _ = self._radial(r * r)
            radius = r * radial
        folds = np.nonzero(np.diff(radius) <= 0)[0]
        return float(theta[folds[0]] if folds.size else theta[-1])

    def _radial(self, r2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radial factor of plumb_bob / rational_polynomial and its derivative with respect to r^2."""
        c = self.coeffs
        k1, k2, k3 = c[0], c[1], c[4]
        k4, k5, k6 = c[5:8] if self.distortion == "rational_polynomial" else (0.0, 0.0, 0.0)
        num = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
        dnum = k1 + r2 * (2 * k2 + 3 * k3 * r2)
        dden = k4 + r2 * (2 * k5 + 3 * k6 * r2)
        return num / den, (dnum * den - num * dden) / (den * den)

    def _theta_d(self, theta: np.ndarray) -> np.ndarray:
        t2 = theta * theta
        k1, k2, k3, k4 = self.coeffs
        return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))

    def _distort(self, xy: np.ndarray) -> np.ndarray:
        """Normalized undistorted coordinates -> normalized distorted coordinates."""
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        if self.distortion == "none":
            return xy.copy()
        if self.distortion == "equidistant":
            r = np.sqrt(r2)
            theta_d = self._theta_d(np.arctan(r))
            scale = np.where(r > 1e-8, theta_d / np.maximum(r, 1e-8), 1.0)  # as cv2.fisheye
            return xy * scale[:, None]
        p1, p2 = self.coeffs[2], self.coeffs[3]
        radial, _ = self._radial(r2)
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return np.stack([xd, yd], axis=1)

    def _undistort(self, xyd: np.ndarray) -> np.ndarray:
        """Normalized distorted -> undistorted coordinates by Newton's method; NaN where it fails or
        the solution lies past `max_angle`."""
        if self.distortion == "none":
            return xyd.copy()
        if self.distortion == "equidistant":
            theta_d = np.hypot(xyd[:, 0], xyd[:, 1])
            theta = np.minimum(theta_d, self.max_angle)
            k1, k2, k3, k4 = self.coeffs
            for _ in range(_NEWTON_ITERATIONS):
                t2 = theta * theta
                slope = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
                theta = np.clip(theta - (self._theta_d(theta) - theta_d) / slope, 0.0, self.max_angle)
            ok = np.abs(self._theta_d(theta) - theta_d) < 1e-9
            scale = np.where(theta_d > 1e-8, np.tan(theta) / np.maximum(theta_d, 1e-8), 1.0)
            return np.where(ok[:, None], xyd * scale[:, None], np.nan)
        p1, p2 = self.coeffs[2], self.coeffs[3]
        xy = xyd.copy()
        for _ in range(_NEWTON_ITERATIONS):
            x, y = xy[:, 0], xy[:, 1]
            r2 = x * x + y * y
            radial, dradial = self._radial(r2)
            residual = self._distort(xy) - xyd
            j00 = radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x
            j11 = radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x
            j01 = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
            det = j00 * j11 - j01 * j01
            step_x = (j11 * residual[:, 0] - j01 * residual[:, 1]) / det
            step_y = (j00 * residual[:, 1] - j01 * residual[:, 0]) / det
            xy = xy - np.stack([step_x, step_y], axis=1)
            if np.all(np.abs(residual) < _NEWTON_TOLERANCE):
                break
        ok = np.all(np.abs(self._distort(xy) - xyd) < 1e-9, axis=1)
        ok &= np.arctan(np.hypot(xy[:, 0], xy[:, 1])) <= self.max_angle
        return np.where(ok[:, None], xy, np.nan)

    # ---- public geometry -------------------------------------------------------------------------------
    def normalized_to_pixel(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted normalized coordinates (x/z, y/z) [N,2] -> (pixels [N,2], valid [N]);
        valid = within `max_angle` of the optical axis."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        xyd = self._distort(xy)
        uv = np.stack([self.fx * xyd[:, 0] + self.cx, self.fy * xyd[:, 1] + self.cy], axis=1)
        valid = np.arctan(np.hypot(xy[:, 0], xy[:, 1])) <= self.max_angle
        return uv, valid

    def project_camera(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame points [N,3] -> (pixels [N,2], valid [N]). valid = in front of the camera and
        within `max_angle`; pixels of points behind the camera are NaN. Pixels may lie outside the image."""
        p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        in_front = p[:, 2] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = p[:, :2] / np.where(in_front, p[:, 2], np.nan)[:, None]
        uv, valid = self.normalized_to_pixel(xy)
        return uv, in_front & valid

    def project(self, points_vehicle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame points [N,3] -> (pixels [N,2], valid [N]) as `project_camera`."""
        p = np.asarray(points_vehicle, dtype=np.float64).reshape(-1, 3)
        return self.project_camera((p - self.position) @ self.R_vehicle_camera)

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Pixels [N,2] -> undistorted normalized coordinates [N,2] (NaN where the lens model has no
        solution within `max_angle`)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        xyd = np.stack([(uv[:, 0] - self.cx) / self.fx, (uv[:, 1] - self.cy) / self.fy], axis=1)
        return self._undistort(xyd)

    def pixel_to_ray(self, uv: np.ndarray) -> np.ndarray:
        """Pixels [N,2] -> unit viewing rays [N,3] in the camera frame (NaN where `undistort_points` is)."""
        xy = self.undistort_points(uv)
        rays = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)

    def pixel_to_ground(self, uv: np.ndarray, ground_z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Intersect the pixels' rays with the plane z = ground_z of the vehicle frame (flat-ground range).
        Returns (points_vehicle [N,3], valid [N]); rays that do not hit the plane ahead are NaN / invalid."""
        rays = self.pixel_to_ray(uv) @ self.R_vehicle_camera.T
        height = self.position[2] - ground_z
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = -height / rays[:, 2]
        valid = np.isfinite(distance) & (distance > 0)
        points = self.position + np.where(valid, distance, np.nan)[:, None] * rays
        return points, valid
