"""Decode CenterNet heads: heatmap peaks -> boxes in original camera pixels, class-wise NMS.

Grid convention (pixel centres at integers): feature cell (i, j) of stride s is centred on network pixel
((i + 0.5) s - 0.5, (j + 0.5) s - 0.5); a box centre in cells is the cell index plus the offset head, so

    centre_net = (index + offset + 0.5) * s - 0.5        box_net = centre_net -+ size / 2

Boxes go back to the source image through the camera's remap table and are clipped to it, as for every
decoder (perception/decode/common.py). Velocities are mapped with the local Jacobian of that mapping at
the box centre. Range: the depth head gives z = exp(log_depth) * fx / depth_focal_px (normalised
to a reference focal length, so one network serves cameras of any focal length); the point at depth z on
the box centre's viewing ray of the (distortion-free) network camera goes through the camera's extrinsics
into the vehicle frame, and range = hypot(x, y) there, as in the ground truth (perception/labels.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from perception.contract import ModelContract
from perception.decode.common import DecodeConfig, RigTables, best_first, camera_runs, classwise_nms, image_extent
from perception.detections import Detections
from perception.engine.base import Heads
from perception.errors import ConfigError

__all__ = ["DecodeConfig", "Decoder", "find_peaks", "image_extent"]  # DecodeConfig, image_extent: from common.py

_KERNEL = np.ones((3, 3), np.uint8)


def find_peaks(heatmap: np.ndarray, thresholds: np.ndarray, max_peaks: int) -> tuple[np.ndarray, ...]:
    """heatmaps [N,C,h,w] of N cameras -> (camera, cls, row, col, score) of local 3x3 maxima at or above
    the class threshold, the highest `max_peaks` of each camera, camera by camera, best first within a camera.
    Equals `heatmap == max_pool2d(heatmap, 3, stride=1, padding=1)`."""
    n, c, h, w = heatmap.shape
    # every plane in one dilation: the planes stacked, each followed by a row of -inf that no window
    # reaches across (a window at a plane's edge sees -inf or nothing, as at the image border)
    stacked = np.full((n * c, h + 1, w), -np.inf, np.float32)
    stacked[:, :h] = heatmap.reshape(n * c, h, w)
    pooled = cv2.dilate(stacked.reshape(-1, w), _KERNEL).reshape(n, c, h + 1, w)[:, :, :h]
    keep = (heatmap == pooled) & (heatmap >= thresholds[:, None, None])
    camera, cls, row, col = np.unravel_index(np.flatnonzero(keep), keep.shape)  # faster than a 4-d nonzero
    score = heatmap[camera, cls, row, col]
    counts = np.bincount(camera, minlength=n)
    if (counts <= max_peaks).all():
        order = np.lexsort((-score, camera))  # stable: ties in (cls, row, col) order
    else:
        order = np.concatenate([start + best_first(score[start:end], max_peaks) for start, end in
                                zip(np.cumsum(counts) - counts, np.cumsum(counts))])
    return camera[order], cls[order], row[order], col[order], score[order]


class Decoder:
    """Decodes one model's heads for one rig: holds the contract, the per-camera remap tables and the
    valid extent of each table (computed once)."""

    def __init__(self, contract: ModelContract, tables: Sequence, config: DecodeConfig) -> None:
        self.rig = RigTables(contract, tables, config)
        self.contract = contract
        self.tables = self.rig.tables
        self.config = config
        self._thresholds = np.asarray(config.score_thresholds, np.float32)
        # the depth head is normalised to a reference focal length (docs/model.md)
        self._depth_scale = np.array([t.net_camera.fx / contract.depth_focal_px for t in self.tables])
        net = [t.net_camera for t in self.tables]
        self._principal = np.array([[k.cx, k.cy] for k in net], np.float64).reshape(-1, 2)
        self._focal = np.array([[k.fx, k.fy] for k in net], np.float64).reshape(-1, 2)

    def __call__(self, heads: Heads, fresh: np.ndarray | None = None) -> Detections:
        """Detections of every fresh camera (stale cameras' heads are not meaningful and are skipped)."""
        n_cams = heads.heatmap.shape[0]
        if n_cams != len(self.tables):
            raise ConfigError(f"decode: heads for {n_cams} cameras, {len(self.tables)} remap tables")
        cams = np.arange(n_cams) if fresh is None else np.flatnonzero(fresh)
        heatmap = heads.heatmap if len(cams) == n_cams else heads.heatmap[cams]
        k, cls, row, col, score = find_peaks(heatmap, self._thresholds, self.config.max_per_camera)
        if score.size == 0:
            return Detections.empty()
        camera = cams[k]
        s = float(self.contract.stride)
        centre = ((np.stack([col, row], 1) + heads.offset[camera, :, row, col] + 0.5) * s - 0.5).astype(np.float64)
        size = heads.size[camera, :, row, col].astype(np.float64)
        # one lens mapping per camera: the box edges' midpoints and the velocity Jacobian's probes together
        probes = centre[:, None, :] + _PROBES
        src = self.rig.net_to_source(camera, np.concatenate([self.rig.edge_points(camera, centre, size), probes], 1))
        box, ok = self.rig.source_boxes(camera, src[:, :4])
        velocity = _velocity_to_source(src[:, 4:], heads.velocity[camera, :, row, col].astype(np.float64))
        velocity[~(heads.velocity_valid[camera] >= 0.5)] = np.nan
        depth = np.exp(heads.log_depth[camera, 0, row, col].astype(np.float64)) * self._depth_scale[camera]
        range_m = self._range_from_depth(camera, centre, depth)
        dets = Detections(camera[ok].astype(np.int32), cls[ok].astype(np.int32), score[ok].astype(np.float32),
                          box[ok].astype(np.float32), range_m[ok].astype(np.float32), velocity[ok].astype(np.float32))
        return classwise_nms(dets, len(self.contract.classes), self.config.nms_iou)

    def _range_from_depth(self, camera: np.ndarray, centre: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Range (m, from the vehicle origin, in the ground plane) of the points at optical-axis depth `depth`
        on the viewing rays of network pixels `centre` [M,2] of cameras `camera` [M] (non-decreasing)."""
        xy = (centre - self._principal[camera]) / self._focal[camera] * depth[:, None]
        p = np.concatenate([xy, depth[:, None]], 1)
        for c, rows in camera_runs(camera, len(self.tables)):  # each camera's extrinsics
            T = self.tables[c].net_camera.T_vehicle_camera
            p[rows] = p[rows] @ T[:3, :3].T + T[:3, 3]
        return np.hypot(p[:, 0], p[:, 1])


_STEP = 0.5  # px, of the central differences of the velocity Jacobian
_PROBES = np.array([[_STEP, 0.0], [-_STEP, 0.0], [0.0, _STEP], [0.0, -_STEP]])  # centre +- dx, +- dy


def _velocity_to_source(src: np.ndarray, v_net: np.ndarray) -> np.ndarray:
    """v_src = J v_net with J the central-difference Jacobian of net_to_source at each centre, from the
    source pixels [M, 4, 2] of the centre + _PROBES."""
    jx = (src[:, 0] - src[:, 1]) / (2 * _STEP)      # d source / d x_net
    jy = (src[:, 2] - src[:, 3]) / (2 * _STEP)
    return jx * v_net[:, :1] + jy * v_net[:, 1:]
