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
from perception.decode.common import DecodeConfig, boxes_to_source, classwise_nms, image_extent, rig_extents
from perception.detections import Detections
from perception.engine.base import Heads
from perception.errors import ConfigError

__all__ = ["DecodeConfig", "Decoder", "find_peaks", "image_extent"]  # DecodeConfig, image_extent: from common.py


def find_peaks(heatmap: np.ndarray, thresholds: np.ndarray, max_peaks: int) -> tuple[np.ndarray, ...]:
    """heatmap [C,h,w] -> (cls, row, col, score) of local 3x3 maxima at or above the class threshold,
    highest `max_peaks` first. Equals `heatmap == max_pool2d(heatmap, 3, stride=1, padding=1)`."""
    kernel = np.ones((3, 3), np.uint8)
    pooled = np.stack([cv2.dilate(np.ascontiguousarray(plane), kernel) for plane in heatmap])
    keep = (heatmap == pooled) & (heatmap >= thresholds[:, None, None])
    cls, row, col = np.nonzero(keep)
    score = heatmap[cls, row, col]
    if score.size > max_peaks:
        top = np.argpartition(-score, max_peaks - 1)[:max_peaks]
        cls, row, col, score = cls[top], row[top], col[top], score[top]
    order = np.argsort(-score, kind="stable")
    return cls[order], row[order], col[order], score[order]


class Decoder:
    """Decodes one model's heads for one rig: holds the contract, the per-camera remap tables and the
    valid extent of each table (computed once)."""

    def __init__(self, contract: ModelContract, tables: Sequence, config: DecodeConfig) -> None:
        self._extents = rig_extents(contract, tables, config)
        self.contract = contract
        self.tables = list(tables)
        self.config = config
        self._thresholds = np.asarray(config.score_thresholds, np.float32)
        # the depth head is normalised to a reference focal length (docs/model.md)
        self._depth_scale = [t.net_camera.fx / contract.depth_focal_px for t in self.tables]

    def __call__(self, heads: Heads, fresh: np.ndarray | None = None) -> Detections:
        """Detections of every fresh camera (stale cameras' heads are not meaningful and are skipped)."""
        n_cams = heads.heatmap.shape[0]
        if n_cams != len(self.tables):
            raise ConfigError(f"decode: heads for {n_cams} cameras, {len(self.tables)} remap tables")
        s = float(self.contract.stride)
        parts = []
        for n in range(n_cams):
            if fresh is not None and not fresh[n]:
                continue
            cls, row, col, score = find_peaks(heads.heatmap[n], self._thresholds, self.config.max_per_camera)
            if score.size == 0:
                continue
            centre = np.stack([(col + heads.offset[n, 0, row, col] + 0.5) * s - 0.5,
                               (row + heads.offset[n, 1, row, col] + 0.5) * s - 0.5], 1).astype(np.float64)
            size = np.stack([heads.size[n, 0, row, col], heads.size[n, 1, row, col]], 1).astype(np.float64)
            box, ok = boxes_to_source(centre, size, self.tables[n], self._extents[n])
            if heads.velocity_valid[n] >= 0.5:
                v_net = np.stack([heads.velocity[n, 0, row, col], heads.velocity[n, 1, row, col]], 1)
                velocity = _velocity_to_source(centre, v_net.astype(np.float64), self.tables[n])
            else:
                velocity = np.full((score.size, 2), np.nan)
            depth = np.exp(heads.log_depth[n, 0, row, col].astype(np.float64)) * self._depth_scale[n]
            rng = _range_from_depth(centre, depth, self.tables[n].net_camera)
            parts.append(Detections(np.full(int(ok.sum()), n, np.int32), cls[ok].astype(np.int32),
                                    score[ok].astype(np.float32), box[ok].astype(np.float32),
                                    rng[ok].astype(np.float32), velocity[ok].astype(np.float32)))
        return classwise_nms(Detections.concatenate(parts), len(self.contract.classes), self.config.nms_iou)


def _range_from_depth(centre: np.ndarray, depth: np.ndarray, net_camera) -> np.ndarray:
    """Range (m, from the vehicle origin, in the ground plane) of the points at optical-axis depth `depth`
    on the viewing rays of network pixels `centre` [M,2]."""
    x = (centre[:, 0] - net_camera.cx) / net_camera.fx * depth
    y = (centre[:, 1] - net_camera.cy) / net_camera.fy * depth
    T = net_camera.T_vehicle_camera
    p = np.stack([x, y, depth], 1) @ T[:3, :3].T + T[:3, 3]
    return np.hypot(p[:, 0], p[:, 1])


def _velocity_to_source(centre: np.ndarray, v_net: np.ndarray, table, step: float = 0.5) -> np.ndarray:
    """v_src = J v_net with J the central-difference Jacobian of net_to_source at each centre."""
    m = centre.shape[0]
    dx, dy = np.array([step, 0.0]), np.array([0.0, step])
    pts = np.concatenate([centre + dx, centre - dx, centre + dy, centre - dy])
    src = table.net_to_source(pts).reshape(4, m, 2)
    jx = (src[0] - src[1]) / (2 * step)      # d source / d x_net
    jy = (src[2] - src[3]) / (2 * step)
    return jx * v_net[:, :1] + jy * v_net[:, 1:]
