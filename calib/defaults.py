"""The built-in rig used by `perception synth`, the demo and tests: up to six automotive cameras.

Intrinsics are chosen from a horizontal field of view: fx = fy puts the image's left and right edges at
+-HFOV/2 through the lens model. Distortion coefficients are of the size real lenses have (the wide
cameras are strongly distorted), and every pixel of every camera lies inside its lens model's one-to-one
range (tests check this).
"""

from __future__ import annotations

import numpy as np

from calib.camera import CameraModel, mount_transform
from calib.rig import Rig

# name, (width, height), HFOV deg, distortion, coeffs, (x, y, z) m, yaw deg, pitch deg
_CAMERAS = (
    ("front", (1920, 1080), 60.0, "plumb_bob", (-0.08, 0.05, 0.0005, -0.0003, 0.0),
     (1.90, 0.0, 1.40), 0.0, 1.0),
    ("front_left", (1920, 1080), 100.0, "plumb_bob", (-0.30, 0.09, 0.0008, -0.0004, -0.012),
     (1.80, 0.45, 1.40), 55.0, 2.0),
    ("front_right", (1920, 1080), 100.0, "plumb_bob", (-0.29, 0.085, -0.0006, 0.0005, -0.011),
     (1.80, -0.45, 1.40), -55.0, 2.0),
    ("rear", (1920, 1080), 70.0, "rational_polynomial", (0.9, 0.1, 0.0004, 0.0002, 0.0, 1.2, 0.25, 0.0),
     (-0.50, 0.0, 1.35), 180.0, 5.0),
    ("side_left", (1280, 800), 140.0, "equidistant", (0.02, -0.006, 0.001, -0.0002),
     (2.00, 0.95, 1.40), 90.0, 15.0),
    ("side_right", (1280, 800), 140.0, "equidistant", (0.021, -0.0055, 0.0009, -0.0002),
     (2.00, -0.95, 1.40), -90.0, 15.0),
)

MAX_CAMERAS = len(_CAMERAS)


def default_rig(num_cameras: int = 3) -> Rig:
    """The first `num_cameras` (1..6) of: front, front_left, front_right, rear, side_left, side_right."""
    if not 1 <= num_cameras <= MAX_CAMERAS:
        raise ValueError(f"num_cameras must be 1..{MAX_CAMERAS}, got {num_cameras}")
    return Rig(_camera(*spec) for spec in _CAMERAS[:num_cameras])


def _camera(name: str, size: tuple[int, int], hfov_deg: float, distortion: str, coeffs: tuple[float, ...],
            position: tuple[float, float, float], yaw_deg: float, pitch_deg: float) -> CameraModel:
    width, height = size
    unit = CameraModel(name, width, height, 1.0, 1.0, 0.0, 0.0, distortion, coeffs)
    half_angle = np.radians(hfov_deg / 2)
    edge_radius = unit.normalized_to_pixel(np.array([[np.tan(half_angle), 0.0]]))[0][0, 0]
    f = (width / 2) / edge_radius
    return CameraModel(name, width, height, f, f, (width - 1) / 2, (height - 1) / 2, distortion, coeffs,
                       mount_transform(*position, yaw_deg=yaw_deg, pitch_deg=pitch_deg))
