"""Decode single-frame detectors with a model card (perception/model_card.py) -> Detections.

    decoder = DetectorDecoder(card, tables, DecodeConfig.for_classes(card.classes, 0.3))
    detections = decoder(outputs, fresh)     # outputs: graph output name -> [N, ...] (N = cameras)

Two formats:
- `yolox-raw` ([N, anchors, 5 + classes], as Megvii's YOLOX exports it and Autoware's tensorrt_yolox
  decodes it): anchor points of strides 8/16/32, each grid row-major, grids concatenated in stride order.
  centre = (grid + d) * stride, size = exp(log size) * stride, score = objectness * class score of the
  anchor's best class (YOLOX's own postprocess).
- `decoded`: boxes [N, K, 4] x0 y0 x1 y1, scores [N, K], labels [N, K] (model class ids) already.

Both give boxes in network pixels with pixel edges at integers (YOLOX's and COCO's convention); the
project's pixel centres are at integers (docs/drive_format.md), so a box moves by -0.5 px before the
mapping. Then as for CenterNet (perception/decode/common.py): model classes map to the project's
through the card (others dropped), per-class score thresholds, at most `max_per_camera` candidates,
each box side mapped through the camera's remap table (undo the letterbox, re-apply the lens distortion)
and clipped to the image, empty boxes dropped, class-wise NMS per camera; with the card's `merge_riders`, a
pedestrian riding a cyclist box merges into one cyclist box (perception/decode/riders.py). There is no depth
or velocity head: range_m and image_velocity are NaN (ranging falls back to the ground plane, the tracker
estimates velocity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from perception.decode.common import DecodeConfig, RigTables, best_first, classwise_nms
from perception.decode.riders import merge_riders
from perception.detections import Detections
from perception.errors import ConfigError
from perception.labels import CLASS_INDEX
from perception.model_card import ModelCard

MAX_LOG_SIZE = 16.0  # exp(16) * 32 px is far past any image: keeps exp finite, the clip does the rest


def yolox_grid(width: int, height: int, strides: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(grid [A, 2] cell x, y; stride [A]) of every anchor point, in the layout of the raw head."""
    grids, steps = [], []
    for s in strides:
        xs, ys = np.meshgrid(np.arange(width // s), np.arange(height // s))
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        steps.append(np.full(xs.size, s))
    return np.concatenate(grids).astype(np.float64), np.concatenate(steps).astype(np.float64)


def yolox_candidates(raw: np.ndarray, grid: np.ndarray, stride: np.ndarray) -> tuple[np.ndarray, ...]:
    """One camera's raw head [A, 5 + C] -> (centre [A, 2], size [A, 2] in network pixels with pixel edges
    at integers, score [A], model class [A]) of each anchor's best class."""
    raw = raw.astype(np.float64)
    centre = (raw[:, :2] + grid) * stride[:, None]
    size = np.exp(np.minimum(raw[:, 2:4], MAX_LOG_SIZE)) * stride[:, None]
    cls = np.argmax(raw[:, 5:], axis=1)
    score = raw[:, 4] * raw[np.arange(raw.shape[0]), 5 + cls]
    return centre, size, score, cls


class DetectorDecoder:
    """Decodes one plug-in model's outputs for one rig (remap tables and their valid extents held)."""

    def __init__(self, card: ModelCard, tables: Sequence, config: DecodeConfig) -> None:
        self.rig = RigTables(card, tables, config)
        self.card = card
        self.tables = self.rig.tables
        self.config = config
        self._thresholds = np.asarray(config.score_thresholds, np.float64)
        self._project_class = np.full(card.num_classes, -1, np.int64)  # model class -> project class, -1 dropped
        for k, v in card.class_map.items():
            self._project_class[k] = v
        if card.format == "yolox-raw":
            self._grid, self._stride = yolox_grid(card.input_width, card.input_height, card.strides)

    def __call__(self, outputs: Mapping[str, np.ndarray], fresh: np.ndarray | None = None) -> Detections:
        """Detections of every fresh camera; `outputs` by graph output name, batch index = camera."""
        parts = [(n, *self._select(*self._candidates(outputs, n))) for n in range(len(self.tables))
                 if fresh is None or fresh[n]]
        if not parts:
            return Detections.empty()
        cameras, centres, sizes, scores, classes = zip(*parts)
        camera = np.repeat(cameras, [len(s) for s in scores])
        centre, size, score, cls = (np.concatenate(p) for p in (centres, sizes, scores, classes))
        box, ok = self.rig.boxes_to_source(camera, centre - 0.5, size)
        m = int(ok.sum())
        dets = Detections(camera[ok].astype(np.int32), cls[ok].astype(np.int32),
                          np.clip(score[ok], 0.0, 1.0).astype(np.float32), box[ok].astype(np.float32),
                          np.full(m, np.nan, np.float32), np.full((m, 2), np.nan, np.float32))
        dets = classwise_nms(dets, len(self.card.classes), self.config.nms_iou)
        return merge_riders(dets, CLASS_INDEX["pedestrian"], CLASS_INDEX["cyclist"]) if self.card.merge_riders else dets

    def _candidates(self, outputs: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, ...]:
        names = self.card.outputs
        try:
            if self.card.format == "yolox-raw":
                return yolox_candidates(outputs[names["raw"]][n], self._grid, self._stride)
            box = outputs[names["boxes"]][n].astype(np.float64)
            score = outputs[names["scores"]][n].astype(np.float64)
            label = outputs[names["labels"]][n]
        except KeyError as e:
            raise ConfigError(f"decode: model {self.card.model_id} gave no output {e}") from None
        label = np.where((label >= 0) & (label < self.card.num_classes), label, -1).astype(np.int64)
        return (box[:, :2] + box[:, 2:]) / 2, box[:, 2:] - box[:, :2], score, label

    def _select(self, centre: np.ndarray, size: np.ndarray, score: np.ndarray,
                model_cls: np.ndarray) -> tuple[np.ndarray, ...]:
        """One camera's candidates of project classes, above their thresholds and finite, the best
        `max_per_camera` of them, best first: (centre, size, score, project class)."""
        cls = np.where(model_cls >= 0, self._project_class[np.maximum(model_cls, 0)], -1)
        keep = np.flatnonzero(cls >= 0)
        keep = keep[score[keep] >= self._thresholds[cls[keep]]]  # NaN scores fail the comparison
        keep = keep[np.isfinite(centre[keep]).all(1) & np.isfinite(size[keep]).all(1) & (size[keep] > 0).all(1)]
        keep = keep[best_first(score[keep], self.config.max_per_camera)]
        return centre[keep], size[keep], score[keep], cls[keep]
