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
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

from perception.labels import CLASSES
from perception.config_base import ConfigBase, param

if TYPE_CHECKING:
    from collections.abc import Sequence

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
        return self._footprints[np.asarray(cls, np.intp)]

    @cached_property
    def _footprints(self) -> np.ndarray:
        return np.array([[getattr(self, f"{name}_length_m"), getattr(self, f"{name}_width_m")] for name in CLASSES])


@dataclass
class RangeEstimates:
    """Per detection: ground-plane position and its uncertainty."""
    position: np.ndarray    # [N, 3] float64, footprint centre, vehicle frame, m (z = ground_z); NaN: source NONE
    covariance: np.ndarray  # [N, 2, 2] float64, total error of position x, y, m^2
    noise_covariance: np.ndarray  # [N, 2, 2] float64, its frame-to-frame part, m^2
    range_m: np.ndarray     # [N] float64, horizontal distance from the vehicle origin, m
    source: np.ndarray      # [N] uint8, RangeSource codes

    def rows(self, index: np.ndarray | slice) -> "RangeEstimates":
        """The estimates of some rows (an index array or a slice)."""
        return RangeEstimates(self.position[index], self.covariance[index], self.noise_covariance[index],
                              self.range_m[index], self.source[index])


def estimate_positions(camera: "CameraModel", boxes: np.ndarray, cls: np.ndarray, head_range_m: np.ndarray,
                       config: RangingConfig) -> RangeEstimates:
    """Positions of objects of classes cls [N] with boxes [N, 4] (pixels of `camera`), fusing the range
    head [N] (NaN where absent). The rays come from the lens model itself (`RigRanging` tabulates them)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rays = camera.pixel_to_ray(_bottom_centres(boxes)) @ camera.R_vehicle_camera.T
    n = len(boxes)
    return _estimate(rays, np.broadcast_to(camera.position, (n, 3)), np.full(n, camera.fx), np.full(n, camera.fy),
                     cls, head_range_m, config)


class RigRanging:
    """`estimate_positions` for the cameras of a rig at once: one call per frame set, whatever the camera of
    each box.

    Undistorting a handful of pixels per camera (Newton on the lens model) costs mostly numpy's per-call
    overhead, so each camera's unit viewing rays (vehicle frame) are tabulated once on a pixel grid that
    covers the image and two grid steps around it, and interpolated (cubic Lagrange over 4 x 4 nodes, then
    renormalised). The grid step is the coarsest power of two (32 px down to 1 px) at which the interpolated
    ray deviates from the lens model's by at most `RAY_TABLE_TOLERANCE_PX` (angle x focal length) at the
    centre and edge midpoints of every cell over the image. Pixels off the grid, or next to a node the lens
    model cannot undistort, use the lens model directly.
    """

    def __init__(self, cameras: "Sequence[CameraModel]", config: RangingConfig):
        self.cameras = tuple(cameras)
        self.config = config
        tables = [_ray_table(_Lens.of(c)) for c in self.cameras]
        self.step = np.array([step for _, step in tables])
        self.shape = np.array([t.shape[:2] for t, _ in tables], np.intp).reshape(-1, 2)  # grid rows, columns
        self.offset = np.concatenate([[0], np.cumsum(self.shape.prod(1))[:-1]]).astype(np.intp)
        self.table = np.concatenate([t.reshape(-1, 3) for t, _ in tables]) if tables else np.zeros((0, 3))
        self.position = np.array([c.position for c in self.cameras]).reshape(-1, 3)
        self.focal = np.array([[c.fx, c.fy] for c in self.cameras]).reshape(-1, 2)

    def estimate(self, camera: np.ndarray, boxes: np.ndarray, cls: np.ndarray,
                 head_range_m: np.ndarray) -> RangeEstimates:
        """As `estimate_positions`, box i seen by camera `camera[i]` (index into the rig)."""
        camera = np.asarray(camera, np.intp).reshape(-1)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        rays = self.rays(camera, _bottom_centres(boxes))
        return _estimate(rays, self.position[camera], self.focal[camera, 0], self.focal[camera, 1], cls,
                         head_range_m, self.config)

    def rays(self, camera: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Unit viewing rays [N, 3] (vehicle frame) through pixels uv [N, 2] of cameras `camera` [N] (NaN where
        the lens model has none)."""
        camera = np.asarray(camera, np.intp).reshape(-1)
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        rays, ok = _interpolate(self.table, self.offset[camera], self.shape[camera], self.step[camera], uv)
        for c in np.unique(camera[~ok]).tolist() if not ok.all() else ():
            rows = np.flatnonzero(~ok & (camera == c))
            rays[rows] = self.cameras[c].pixel_to_ray(uv[rows]) @ self.cameras[c].R_vehicle_camera.T
        return rays


RAY_TABLE_TOLERANCE_PX = 0.01  # 1/200 of a box edge's pixel noise (box_bottom_std_px): ~2 cm at 50 m ahead
_NEIGHBOURS = np.arange(-1, 3)


@np.errstate(invalid="ignore")  # NaN pixels: not ok
def _interpolate(table: np.ndarray, offset: np.ndarray, shape: np.ndarray, step: np.ndarray,
                 uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays [N, 3] at pixels uv [N, 2] from flat tables (grid node (k, l) of a camera at row offset + k *
    columns + l, pixel -0.5 + (l - 2) step, -0.5 + (k - 2) step); offset, shape (rows, columns), step: per
    pixel. Returns (rays, ok); rows not ok (off the grid, a NaN node) hold garbage."""
    rows, cols = shape[..., 0], shape[..., 1]
    f = (uv + 0.5) / np.reshape(step, (-1, 1)) + 2.0  # grid coordinates (column, row)
    i = np.floor(f)
    ok = (i >= 1).all(1) & (i[:, 0] < cols - 2) & (i[:, 1] < rows - 2)
    i = np.where(ok[:, None], i, 1.0).astype(np.intp)
    nodes = ((offset + i[:, 1] * cols + i[:, 0])[:, None, None] + (_NEIGHBOURS * np.reshape(cols, (-1, 1)))[:, :, None]
             + _NEIGHBOURS[None, None, :])
    weights = _cubic_weights(f - i)  # [N, 2, 4]: along the columns, along the rows
    rays = np.einsum("ni,nj,nijk->nk", weights[:, 1], weights[:, 0], table[nodes])
    rays /= np.sqrt(np.add.reduce(rays * rays, axis=1, keepdims=True))  # np.linalg.norm without its overhead
    return rays, ok & np.isfinite(rays).all(1)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """[..., 4] Lagrange weights of the nodes at -1, 0, 1, 2 for positions t [...] in [0, 1)."""
    return np.stack([-t * (t - 1) * (t - 2) / 6, (t + 1) * (t - 1) * (t - 2) / 2,
                     -(t + 1) * t * (t - 2) / 2, (t + 1) * t * (t - 1) / 6], -1)


@dataclass(frozen=True)
class _Lens:
    """A camera as a cache key: equal for cameras with the same rays, whatever their names."""
    params: tuple
    camera: "CameraModel" = field(compare=False)

    @staticmethod
    def of(camera: "CameraModel") -> "_Lens":
        return _Lens((camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy, camera.distortion,
                      camera.coeffs, camera.T_vehicle_camera.tobytes()), camera)


@lru_cache(maxsize=32)  # trackers of the same rig (tests, replays of several drives) build the tables once
def _ray_table(lens: _Lens) -> tuple[np.ndarray, float]:
    """[rows, columns, 3] unit rays (vehicle frame) of the camera on its grid, and the step (see RigRanging)."""
    camera = lens.camera
    step = 32.0
    while True:
        us = -0.5 + step * (np.arange(int(np.ceil(camera.width / step)) + 5) - 2)
        vs = -0.5 + step * (np.arange(int(np.ceil(camera.height / step)) + 5) - 2)
        table = _rays_at(camera, us, vs)
        if step <= 1.0:
            break
        cu, cv = us[2:-3] + step / 2, vs[2:-3] + step / 2  # the cells that cover the image, and their midpoints
        probes = np.concatenate([np.stack(np.meshgrid(pu, pv), -1).reshape(-1, 2)
                                 for pu, pv in ((cu, cv), (cu, vs[2:-2]), (us[2:-2], cv))])
        exact = camera.pixel_to_ray(probes) @ camera.R_vehicle_camera.T
        shape = np.array(table.shape[:2])
        rays, ok = _interpolate(table.reshape(-1, 3), np.zeros(1, np.intp), shape, np.full(1, step), probes)
        error = np.linalg.norm(np.cross(rays, exact), axis=1)
        # a NaN node: the lookup falls back to the lens model there; a NaN probe between finite nodes: refine
        worst = np.where(ok, np.where(np.isfinite(error), error, np.inf), 0.0).max()
        if worst * max(camera.fx, camera.fy) <= RAY_TABLE_TOLERANCE_PX:
            break
        step /= 2
    table.setflags(write=False)  # shared by every tracker of this camera
    return table, step


def _rays_at(camera: "CameraModel", us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """[len(vs), len(us), 3] vehicle-frame rays of the pixel grid us x vs."""
    grid = np.stack(np.meshgrid(us, vs), -1)
    return (camera.pixel_to_ray(grid.reshape(-1, 2)) @ camera.R_vehicle_camera.T).reshape(len(vs), len(us), 3)


def _bottom_centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], 1)


_GEOMETRY, _HEAD = int(RangeSource.GEOMETRY), int(RangeSource.HEAD)  # plain ints: arithmetic with IntEnums is slow
_QUARTER_TURN = np.array([-1.0, 1.0])  # (x, y)[::-1] * this: the direction turned by +90 degrees


@np.errstate(divide="ignore", invalid="ignore")  # rays at or above the horizon, no head: NaN or inf, masked below
def _estimate(rays: np.ndarray, position: np.ndarray, fx: np.ndarray, fy: np.ndarray, cls: np.ndarray,
              head_range_m: np.ndarray, config: RangingConfig) -> RangeEstimates:
    """The estimates from unit rays [N, 3] (vehicle frame) through the boxes' bottom centres, of cameras at
    `position` [N, 3] with focal lengths fx, fy [N] (px)."""
    head = np.asarray(head_range_m, np.float64).reshape(-1)
    n = len(rays)
    origin = position[:, :2]
    height = position[:, 2] - config.ground_z_m

    distance = -height / rays[:, 2]  # along the ray to the road
    hits_ground = np.isfinite(distance) & (distance > 0)
    horizontal = np.hypot(rays[:, 0], rays[:, 1])
    ray_ok = np.isfinite(horizontal) & (horizontal > 1e-9)
    direction = rays[:, :2] / np.where(ray_ok, horizontal, 1.0)[:, None]

    s_near = distance * horizontal
    geo_ok = ray_ok & hits_ground & (height > 0) & (s_near <= config.max_range_m)
    half = config.footprint(cls) / 2
    to_centre = half[:, 0] * np.abs(direction[:, 0]) + half[:, 1] * np.abs(direction[:, 1])
    s_geo = s_near + to_centre
    per_radian = height / (-rays[:, 2]) ** 2
    var_geo_noise = (per_radian * config.box_bottom_std_px / fy) ** 2
    var_geo = var_geo_noise + (per_radian * config.pitch_std_rad) ** 2 + (config.footprint_rel_std * to_centre) ** 2

    # Distance s along the ray's horizontal direction at which |origin + s d| equals the head's range.
    origin_along = np.einsum("ni,ni->n", direction, origin)
    discriminant = origin_along ** 2 - np.einsum("ni,ni->n", origin, origin) + head ** 2
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
    position = np.empty((n, 3))
    position[:, :2] = xy
    position[:, 2] = config.ground_z_m
    position[~valid] = np.nan
    # Across the ray: the box centre's pixel noise, and (persistent) where the object's visible side puts the
    # box centre relative to its footprint centre, up to the footprint's extent across the ray.
    lateral_var_noise = (s * config.box_centre_std_px / fx) ** 2
    across_extent = half[:, 0] * np.abs(direction[:, 1]) + half[:, 1] * np.abs(direction[:, 0])
    lateral_var = lateral_var_noise + (config.footprint_rel_std * across_extent) ** 2
    normal = direction[:, ::-1] * _QUARTER_TURN
    along = direction[:, :, None] * direction[:, None, :]
    across = normal[:, :, None] * normal[:, None, :]
    source = (geo_ok * _GEOMETRY + head_ok * _HEAD).astype(np.uint8)
    return RangeEstimates(position, var_s[:, None, None] * along + lateral_var[:, None, None] * across,
                          var_s_noise[:, None, None] * along + lateral_var_noise[:, None, None] * across,
                          np.hypot(position[:, 0], position[:, 1]), source)
