"""Object position on the ground from one camera: flat-ground geometry fused with the model's range head.

The position of an object is the centre of its footprint on the road (x, y, with z = the road height);
its range is the horizontal distance from the vehicle origin to that point, as `GroundTruthObject.range`.
Both estimates lie on the vertical plane through the camera and the bottom centre of the box, so they
are fused as distances s along that ray's horizontal direction d:

- geometry: the ray through the bottom centre meets the road (`CameraModel.pixel_to_ground`) at the
  object's nearest footprint point; the centre lies farther by the footprint's support in direction d,
  (L/2)|d_x| + (W/2)|d_y| with the class's typical length L and width W (vehicles assumed aligned with
  the ego; std `footprint_rel_std` of that offset). A ray pointing down by alpha from a camera h above the
  road hits it at h / tan(alpha); an angle error d_alpha (camera or vehicle pitch, road slope, the box
  bottom's pixel noise) moves that point by h / sin(alpha)^2 * d_alpha, about s^2 / h * d_alpha: the
  error grows with the square of the distance, and rays at or above the horizon give nothing.
- the range head (`Detections.range_m`, NaN when absent): range to the footprint centre with std
  `head_relative_std` * range, at least `head_min_std_m`.

The fused distance is the inverse-variance weighted mean; the cross-ray std comes from the box centre's
pixel noise and from the object's unknown visible side (the box centre is not the footprint centre's image). Every estimate carries two 2x2 ground-plane covariances: the total error, and the part of it
that changes from frame to frame (pixel noise and the head's error, not the pitch and footprint terms,
which persist as a bias for seconds). The tracker gates with the first and filters with the second, so
that a persistent bias does not make its velocity estimate sluggish.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perception.labels import CLASSES
from perception.config_base import ConfigBase, param

if TYPE_CHECKING:
    from calib.camera import CameraModel


class RangeSource(enum.IntEnum):
    """Which estimates a range came from (`TrackedObjects.range_source` holds these codes)."""
    NONE = 0
    GEOMETRY = 1
    HEAD = 2
    FUSED = 3


@dataclass(frozen=True)
class RangingConfig(ConfigBase):
    pitch_std_rad: float = param(0.005, "std of the camera's pitch relative to the road (calibration error, "
                                 "vehicle pitching, road slope); dominates the geometric range error far away",
                                 unit="rad", ge=0.0)
    box_bottom_std_px: float = param(2.0, "std of the box bottom edge (the contact point's image row)",
                                     unit="px", gt=0.0)
    box_centre_std_px: float = param(2.0, "std of the box centre column (the bearing)", unit="px", gt=0.0)
    head_relative_std: float = param(0.10, "relative std of the model's range head", gt=0.0)
    head_min_std_m: float = param(0.5, "floor of the range head's std", unit="m", gt=0.0)
    max_range_m: float = param(250.0, "geometric estimates farther than this (rays grazing the horizon) are "
                               "discarded", unit="m", gt=0.0)
    ground_z_m: float = param(0.0, "height of the road plane in the vehicle frame", unit="m")
    footprint_rel_std: float = param(0.2, "relative std of the offsets from the box's ground point to the "
                                     "footprint centre (the object's true size and heading are unknown)", ge=0.0)
    car_length_m: float = param(4.5, "typical length of a car", unit="m", gt=0.0)
    car_width_m: float = param(1.8, "typical width of a car", unit="m", gt=0.0)
    truck_length_m: float = param(9.0, "typical length of a truck", unit="m", gt=0.0)
    truck_width_m: float = param(2.5, "typical width of a truck", unit="m", gt=0.0)
    pedestrian_length_m: float = param(0.5, "typical depth of a pedestrian", unit="m", gt=0.0)
    pedestrian_width_m: float = param(0.6, "typical width of a pedestrian", unit="m", gt=0.0)
    cyclist_length_m: float = param(1.75, "typical length of a cyclist", unit="m", gt=0.0)
    cyclist_width_m: float = param(0.6, "typical width of a cyclist", unit="m", gt=0.0)

    def footprint(self, cls: np.ndarray) -> np.ndarray:
        """[N, 2] typical (length, width) in m of classes cls [N] (indices into perception.labels.CLASSES)."""
        table = np.array([[getattr(self, f"{name}_length_m"), getattr(self, f"{name}_width_m")]
                          for name in CLASSES])
        return table[np.asarray(cls, np.intp)]


@dataclass
class RangeEstimates:
    """Per detection: ground-plane position and its uncertainty."""
    position: np.ndarray    # [N, 3] float64, footprint centre, vehicle frame, m (z = ground_z); NaN: source NONE
    covariance: np.ndarray  # [N, 2, 2] float64, total error of position x, y, m^2
    noise_covariance: np.ndarray  # [N, 2, 2] float64, its frame-to-frame part, m^2
    range_m: np.ndarray     # [N] float64, horizontal distance from the vehicle origin, m
    source: np.ndarray      # [N] uint8, RangeSource codes


def estimate_positions(camera: "CameraModel", boxes: np.ndarray, cls: np.ndarray, head_range_m: np.ndarray,
                       config: RangingConfig) -> RangeEstimates:
    """Positions of objects of classes cls [N] with boxes [N, 4] (pixels of `camera`), fusing the range
    head [N] (NaN where absent)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    head = np.asarray(head_range_m, np.float64).reshape(-1)
    n = len(boxes)
    uv = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], 1)
    origin = camera.position[:2]
    height = camera.position[2] - config.ground_z_m

    ground, hits_ground = camera.pixel_to_ground(uv, config.ground_z_m)
    rays = ground - camera.position
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    if not hits_ground.all():  # rays at or above the horizon still give the head's bearing
        rays[~hits_ground] = camera.pixel_to_ray(uv[~hits_ground]) @ camera.R_vehicle_camera.T
    horizontal = np.hypot(rays[:, 0], rays[:, 1])
    ray_ok = np.isfinite(horizontal) & (horizontal > 1e-9)
    direction = rays[:, :2] / np.where(ray_ok, horizontal, 1.0)[:, None]

    s_near = np.linalg.norm(ground[:, :2] - origin, axis=1)
    geo_ok = ray_ok & hits_ground & (height > 0) & (s_near <= config.max_range_m)
    half = config.footprint(cls) / 2
    to_centre = half[:, 0] * np.abs(direction[:, 0]) + half[:, 1] * np.abs(direction[:, 1])
    s_geo = s_near + to_centre
    with np.errstate(divide="ignore", invalid="ignore"):
        per_radian = height / (-rays[:, 2]) ** 2
        var_geo_noise = (per_radian * config.box_bottom_std_px / camera.fy) ** 2
        var_geo = (var_geo_noise + (per_radian * config.pitch_std_rad) ** 2
                   + (config.footprint_rel_std * to_centre) ** 2)

    # Distance s along the ray's horizontal direction at which |origin + s d| equals the head's range.
    origin_along = direction @ origin
    discriminant = origin_along ** 2 - origin @ origin + head ** 2
    with np.errstate(invalid="ignore"):
        s_head = -origin_along + np.sqrt(discriminant)
    head_ok = ray_ok & np.isfinite(head) & (head > 0) & (discriminant >= 0) & (s_head > 0)
    var_head = np.maximum(config.head_min_std_m, config.head_relative_std * head) ** 2

    w_geo = np.where(geo_ok, 1.0 / np.where(geo_ok, var_geo, 1.0), 0.0)
    w_head = np.where(head_ok, 1.0 / np.where(head_ok, var_head, 1.0), 0.0)
    weight = w_geo + w_head
    valid = weight > 0
    safe_weight = np.where(valid, weight, 1.0)
    s = (w_geo * np.where(geo_ok, s_geo, 0.0) + w_head * np.where(head_ok, s_head, 0.0)) / safe_weight
    var_s = 1.0 / safe_weight
    var_s_noise = (w_geo ** 2 * np.where(geo_ok, var_geo_noise, 0.0)
                   + w_head ** 2 * np.where(head_ok, var_head, 0.0)) / safe_weight ** 2

    xy = origin + s[:, None] * direction
    position = np.concatenate([xy, np.full((n, 1), config.ground_z_m)], 1)
    position[~valid] = np.nan
    # Across the ray: the box centre's pixel noise, and (persistent) where the object's visible side puts the
    # box centre relative to its footprint centre, up to the footprint's extent across the ray.
    lateral_var_noise = (s * config.box_centre_std_px / camera.fx) ** 2
    across_extent = half[:, 0] * np.abs(direction[:, 1]) + half[:, 1] * np.abs(direction[:, 0])
    lateral_var = lateral_var_noise + (config.footprint_rel_std * across_extent) ** 2
    normal = np.stack([-direction[:, 1], direction[:, 0]], 1)
    along = direction[:, :, None] * direction[:, None, :]
    across = normal[:, :, None] * normal[:, None, :]
    source = (geo_ok * RangeSource.GEOMETRY + head_ok * RangeSource.HEAD).astype(np.uint8)
    return RangeEstimates(position, var_s[:, None, None] * along + lateral_var[:, None, None] * across,
                          var_s_noise[:, None, None] * along + lateral_var_noise[:, None, None] * across,
                          np.hypot(position[:, 0], position[:, 1]), source)
