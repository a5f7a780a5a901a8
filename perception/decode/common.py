"""What both decoders share (CenterNet heads: centernet.py, plug-in detectors: yolox.py): the configuration,
the check of the remap tables against the network input, boxes mapped back to source pixels, class-wise NMS.

Boxes go back to the source image through the camera's remap table (undo the letterbox, re-apply the
lens distortion): each side is mapped at its midpoint (as training maps boxes the other way) and the box
is clipped to the image. Boxes are pixel-edge extents, like the ground truth: a box covering the whole
image is [-0.5, -0.5, W - 0.5, H - 0.5].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from perception.detections import Detections
from perception.errors import ConfigError

if TYPE_CHECKING:
    from perception.contract import ModelContract
    from perception.model_card import ModelCard

# edge midpoints (left, top, right, bottom) as fractions of (w, h) from the top-left corner
_EDGE_MIDPOINTS = np.array([[0, 0.5], [0.5, 0], [1, 0.5], [0.5, 1]], np.float64)
_EDGE, _EDGE_AXIS = np.arange(4), np.array([0, 1, 0, 1])  # the coordinate each edge sets


@dataclass(frozen=True)
class DecodeConfig:
    score_thresholds: tuple[float, ...]     # one per class, in the model's class order
    nms_iou: float = 0.5
    max_per_camera: int = 100               # peaks kept per camera before NMS

    def __post_init__(self) -> None:
        if not all(0.0 < t <= 1.0 for t in self.score_thresholds):
            raise ConfigError(f"decode: score thresholds must be in (0, 1], got {list(self.score_thresholds)}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"decode: nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_per_camera < 1:
            raise ConfigError(f"decode: max_per_camera must be >= 1, got {self.max_per_camera}")

    @staticmethod
    def for_classes(classes: Sequence[str], thresholds: float | Mapping[str, float] = 0.3,
                    default: float = 0.3, **kw: float) -> "DecodeConfig":
        """Thresholds by class name (missing classes get `default`); unknown names are an error."""
        if not isinstance(thresholds, Mapping):
            return DecodeConfig(tuple(float(thresholds) for _ in classes), **kw)  # type: ignore[arg-type]
        unknown = sorted(set(thresholds) - set(classes))
        if unknown:
            raise ConfigError(f"decode: score thresholds for unknown classes {unknown} (model classes: {list(classes)})")
        return DecodeConfig(tuple(float(thresholds.get(c, default)) for c in classes), **kw)  # type: ignore[arg-type]


class RigTables:
    """The remap tables of a rig as the decoders use them, checked once against the model (a ModelContract
    or ModelCard) and `config` (a threshold per class): each camera's valid extent in network pixels
    (image_extent) and its source image's pixel-edge limits, as per-camera arrays, so that the boxes of all
    cameras of a frame set are mapped in a few calls (the lens mapping itself runs once per camera)."""

    def __init__(self, model: ModelContract | ModelCard, tables: Sequence, config: DecodeConfig) -> None:
        if len(config.score_thresholds) != len(model.classes):
            raise ConfigError(f"decode: {len(config.score_thresholds)} score thresholds for "
                              f"{len(model.classes)} classes {list(model.classes)}")
        for n, t in enumerate(tables):
            if (t.net_camera.width, t.net_camera.height) != (model.input_width, model.input_height):
                raise ConfigError(f"decode: camera {n} ({t.source_camera.name}): remap table is for a "
                                  f"{t.net_camera.width}x{t.net_camera.height} input, the model takes "
                                  f"{model.input_width}x{model.input_height}")
        self.tables = list(tables)
        extents = [image_extent(t) for t in self.tables]
        self.lo = np.array([lo for lo, _ in extents], np.float64).reshape(-1, 2)
        self.hi = np.array([hi for _, hi in extents], np.float64).reshape(-1, 2)
        self.limit = np.array([[t.source_camera.width - 0.5, t.source_camera.height - 0.5] for t in self.tables],
                              np.float64).reshape(-1, 2)

    def net_to_source(self, camera: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Network pixels pts [M, K, 2] of cameras `camera` [M] (non-decreasing) -> source pixels [M, K, 2]
        (NaN past the lens model's range; remap.RemapTable.net_to_source), one call per camera."""
        src = np.empty_like(pts)
        for c, rows in camera_runs(camera, len(self.tables)):
            src[rows] = self.tables[c].net_to_source(pts[rows].reshape(-1, 2)).reshape(src[rows].shape)
        return src

    def edge_points(self, camera: np.ndarray, centre: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Boxes (centre, size) [M, 2] in network pixels -> their edge midpoints [M, 4, 2] (left, top, right,
        bottom), clipped to the valid extent of each box's camera."""
        pts = centre[:, None, :] + (_EDGE_MIDPOINTS[None] - 0.5) * size[:, None, :]
        return np.clip(pts, self.lo[camera][:, None], self.hi[camera][:, None])

    def source_boxes(self, camera: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edge midpoints in source pixels [M, 4, 2] -> ([M, 4] boxes x0 y0 x1 y1 clipped to the image, [M]
        whether the box is kept: finite and not empty)."""
        box = np.clip(edges[:, _EDGE, _EDGE_AXIS], -0.5, self.limit[camera][:, _EDGE_AXIS])  # x0 y0 x1 y1
        return box, np.isfinite(box).all(1) & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])

    def boxes_to_source(self, camera: np.ndarray, centre: np.ndarray,
                        size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (centre, size) [M, 2] in network pixels of cameras `camera` [M] (non-decreasing) -> source
        boxes and whether each is kept (source_boxes). Each side goes through the mapping at its midpoint,
        the inverse of perception.model.targets.source_boxes_to_net."""
        return self.source_boxes(camera, self.net_to_source(camera, self.edge_points(camera, centre, size)))


def camera_runs(camera: np.ndarray, cameras: int) -> list[tuple[int, slice]]:
    """(camera index, its rows) of each of `cameras` cameras that has rows in `camera` [M] (non-decreasing)."""
    bounds = np.searchsorted(camera, np.arange(cameras + 1)).tolist()
    return [(c, slice(a, b)) for c, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]


def best_first(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the highest `k` of `score`, best first (ties in index order)."""
    top = np.arange(score.size)
    if score.size > k:
        top = np.argpartition(-score, k - 1)[:k]
    return top[np.argsort(-score[top], kind="stable")]


def image_extent(table) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) x, y bounds, in network pixels at pixel edges, of the part of the network input that shows
    the source image (its letterbox bars excluded). Boxes live between pixel edges (docs/drive_format.md)."""
    rows, cols = np.nonzero(table.valid)
    if rows.size == 0:
        raise ConfigError(f"decode: camera {table.source_camera.name}: remap table samples nothing of the image")
    return (np.array([cols.min(), rows.min()], np.float64) - 0.5,
            np.array([cols.max(), rows.max()], np.float64) + 0.5)


def classwise_nms(dets: Detections, num_classes: int, iou: float) -> Detections:
    """The detections kept by class-wise NMS within each camera (OpenCV), best score first."""
    if not len(dets):
        return dets
    xywh = np.concatenate([dets.box[:, :2], dets.box[:, 2:] - dets.box[:, :2]], 1).astype(np.float64)
    groups = (dets.camera * num_classes + dets.cls).astype(np.int32)
    keep = cv2.dnn.NMSBoxesBatched(xywh, dets.score, groups, 0.0, iou)
    keep = np.asarray(keep, np.int64).reshape(-1)
    return dets.select(keep[np.argsort(-dets.score[keep], kind="stable")])
