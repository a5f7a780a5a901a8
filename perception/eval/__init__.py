"""The one evaluation protocol: difficulty levels, COCO-procedure AP with ignored boxes, unmatched objects.

Training validation (perception/model/evaluate.py), the model card (models/build_demo.py) and
`perception replay report` (replay/metrics) all score detections with this package, so their figures are
the same figures (docs/evaluation.md).

    frames = [ScoredFrame.build(det_box, det_cls, det_score, gt_box, gt_cls, occlusion, truncation,
                                image_width, MODERATE) for ...]
    metrics = evaluate_detections(frames, classes)       # metrics.map50, metrics.ap(k, 0)
"""

from perception.eval.detection import (IOU_THRESHOLDS, RECALL_THRESHOLDS, DetectionMetrics, ScoredFrame,
                                       evaluate_detections, unmatched_per_frame)
from perception.eval.difficulty import EASY, HARD, LEVELS, MODERATE, Difficulty, level_named

__all__ = ["EASY", "HARD", "IOU_THRESHOLDS", "LEVELS", "MODERATE", "RECALL_THRESHOLDS", "DetectionMetrics",
           "Difficulty", "ScoredFrame", "evaluate_detections", "level_named", "unmatched_per_frame"]
