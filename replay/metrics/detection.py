"""Detection metrics of a run by the one evaluation protocol (perception/eval): each labelled camera frame
with the node's objects for it, scored at every difficulty level; another camera's view of a fused object
(replay/metrics/align.py) is ignored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from perception.eval import LEVELS, Difficulty, DetectionMetrics, ScoredFrame, evaluate_detections
from perception.labels import CLASSES
from replay.metrics.align import EvalImage


def scored_frames(images: Sequence[EvalImage], widths: Mapping[str, int], level: Difficulty) -> list[ScoredFrame]:
    """`widths`: image width of each camera (the rig's), which the levels' heights are a share of."""
    frames = []
    for im in images:
        frame = ScoredFrame.build(im.det.box, im.det.cls, im.det.score, im.gt_boxes, im.gt_cls,
                                  [b.occlusion for b in im.gt.boxes], [b.truncation for b in im.gt.boxes],
                                  widths[im.camera], level)
        frames.append(frame if im.other_view is None else replace(frame, gt_ignore=frame.gt_ignore | im.other_view))
    return frames


def evaluate_levels(images: Sequence[EvalImage], widths: Mapping[str, int],
                    max_dets: int = 100) -> dict[str, DetectionMetrics]:
    return {level.name: evaluate_detections(scored_frames(images, widths, level), CLASSES, max_dets)
            for level in LEVELS}


def gt_boxes_of(images: Sequence[EvalImage]) -> int:
    return int(sum(np.count_nonzero(im.gt_cls >= 0) for im in images))
