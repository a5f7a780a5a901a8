"""Detection AP, COCO style (the procedure of pycocotools' COCOeval for boxes, area range "all", no crowd
or ignored boxes): per camera frame and class, detections in descending score order (the best
`max_dets`) greedily take the best-overlapping free ground-truth box at each IoU threshold; per class the
matches of all frames are ranked by score, precision is made monotone and sampled at 101 recall points.
AP@0.5 is that at IoU 0.5; COCO mAP averages over IoU 0.50:0.05:0.95 and the classes that have ground
truth. tests/test_replay_metrics.py checks it against pycocotools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from replay.metrics.align import EvalImage
from replay.metrics.matching import box_iou

# the same expressions as pycocotools' Params, so the thresholds are the same floats
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


@dataclass(frozen=True)
class DetectionMetrics:
    classes: tuple[str, ...]
    precision: np.ndarray    # [T, R, K] interpolated precision at RECALL_THRESHOLDS; -1: class without ground truth
    recall: np.ndarray       # [T, K] recall with every detection; -1: class without ground truth
    gt_count: np.ndarray     # [K] ground-truth boxes
    det_count: np.ndarray    # [K] detections considered

    def ap(self, k: int, t: int | None = None) -> float:
        """AP of class k at IoU threshold index t (None: mean over the thresholds); NaN without ground truth."""
        if self.gt_count[k] == 0:
            return float("nan")
        p = self.precision[:, :, k] if t is None else self.precision[t, :, k]
        return float(p.mean())

    @property
    def map50(self) -> float:
        return _mean_valid(self.precision[0])

    @property
    def map(self) -> float:
        return _mean_valid(self.precision)


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else float("nan")


def evaluate_detections(images: Sequence[EvalImage], classes: Sequence[str], max_dets: int = 100) -> DetectionMetrics:
    T, R, K = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(classes)
    precision = -np.ones((T, R, K))
    recall = -np.ones((T, K))
    gt_count = np.zeros(K, np.int64)
    det_count = np.zeros(K, np.int64)
    gt_boxes = [im.gt_boxes for im in images]
    gt_cls = [im.gt_cls for im in images]
    for k in range(K):
        scores, matched = [], []
        for i, im in enumerate(images):
            g = gt_boxes[i][gt_cls[i] == k]
            d_rows = np.flatnonzero(im.det.cls == k)
            order = d_rows[np.argsort(-im.det.score[d_rows], kind="mergesort")][:max_dets]
            gt_count[k] += len(g)
            det_count[k] += len(order)
            if len(order):
                scores.append(im.det.score[order])
                matched.append(_greedy_matches(box_iou(im.det.box[order], g)))
        if gt_count[k] == 0:
            continue
        if not scores:
            precision[:, :, k] = 0.0
            recall[:, k] = 0.0
            continue
        all_scores = np.concatenate(scores)
        ranked = np.argsort(-all_scores, kind="mergesort")
        tps = np.concatenate(matched, axis=1)[:, ranked]
        tp_sum = np.cumsum(tps, axis=1, dtype=np.float64)
        fp_sum = np.cumsum(~tps, axis=1, dtype=np.float64)
        for t in range(T):
            rc = tp_sum[t] / gt_count[k]
            pr = tp_sum[t] / (fp_sum[t] + tp_sum[t] + np.spacing(1))
            recall[t, k] = rc[-1]
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # monotone: the best precision at any higher recall
            at = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
            q = np.zeros(R)
            reached = at < len(pr)
            q[reached] = pr[at[reached]]
            precision[t, :, k] = q
    return DetectionMetrics(tuple(classes), precision, recall, gt_count, det_count)


def _greedy_matches(iou: np.ndarray) -> np.ndarray:
    """[T, D] bool: detection d (rows of `iou`, best score first) matched at IoU threshold t. Each takes the
    free ground-truth box of highest IoU >= t (on equal IoU the last one, as COCOeval does)."""
    D, G = iou.shape
    matched = np.zeros((len(IOU_THRESHOLDS), D), bool)
    if G == 0:
        return matched
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(G, bool)
        floor = min(threshold, 1 - 1e-10)
        for d in range(D):
            candidates = np.flatnonzero(~taken & (iou[d] >= floor))
            if not candidates.size:
                continue
            values = iou[d, candidates]
            best = candidates[len(values) - 1 - int(np.argmax(values[::-1]))]
            taken[best] = True
            matched[t, d] = True
    return matched
