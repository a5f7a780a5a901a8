"""Detection AP by the procedure of pycocotools' COCOeval (boxes), with per-box ignore flags.

Per camera frame and class, detections in descending score order (the best `max_dets`) greedily take the
free labelled box of highest IoU >= t at each IoU threshold t, preferring boxes that are scored over
ignored ones (COCOeval's `_ignore`); a detection on an ignored box, or an unmatched one flagged
`det_out_of_range`, is left out. Per class the kept detections of all frames are ranked by score, precision
is made monotone and sampled at 101 recall points. AP@0.5 is that at IoU 0.5; mAP averages over IoU
0.50:0.05:0.95 and the classes with scored boxes.

Written here rather than called from pycocotools because pycocotools takes ignore flags only as area ranges
or crowd regions (crowd IoU divides by the detection's area), and the node's harness must not need it;
tests/test_eval_protocol.py checks it against pycocotools, ignored boxes included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.eval.difficulty import Difficulty

# the same expressions as pycocotools' Params, so the thresholds are the same floats
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


@dataclass(frozen=True)
class ScoredFrame:
    """One labelled camera frame: what was detected and what is labelled, with the level's ignore flags."""
    det_box: np.ndarray           # [D, 4] float64 x0, y0, x1, y1 (camera pixels)
    det_cls: np.ndarray           # [D] int64 class index
    det_score: np.ndarray         # [D] float64
    det_out_of_range: np.ndarray  # [D] bool: ignored when unmatched (smaller than the level scores)
    gt_box: np.ndarray            # [G, 4] float64
    gt_cls: np.ndarray            # [G] int64
    gt_ignore: np.ndarray         # [G] bool: outside the level (neither hit nor miss)

    @staticmethod
    def build(det_box, det_cls, det_score, gt_box, gt_cls, occlusion, truncation, image_width: float,
              level: Difficulty, visible=None) -> "ScoredFrame":
        det_box = np.asarray(det_box, np.float64).reshape(-1, 4)
        gt_box = np.asarray(gt_box, np.float64).reshape(-1, 4)
        return ScoredFrame(det_box, np.asarray(det_cls, np.int64).reshape(-1),
                           np.asarray(det_score, np.float64).reshape(-1), level.too_small(det_box, image_width),
                           gt_box, np.asarray(gt_cls, np.int64).reshape(-1),
                           level.ignored(gt_box, occlusion, truncation, image_width, visible))


@dataclass(frozen=True)
class DetectionMetrics:
    classes: tuple[str, ...]
    precision: np.ndarray    # [T, R, K] interpolated precision at RECALL_THRESHOLDS; -1: class without scored boxes
    recall: np.ndarray       # [T, K] recall with every detection; -1: class without scored boxes
    gt_count: np.ndarray     # [K] scored (non-ignored) labelled boxes
    det_count: np.ndarray    # [K] detections considered (before ignoring)

    def ap(self, k: int, t: int | None = None) -> float:
        """AP of class k at IoU threshold index t (None: mean over the thresholds); NaN without scored boxes."""
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

    def ap50_by_class(self) -> dict[str, float]:
        return {name: self.ap(k, 0) for k, name in enumerate(self.classes)}


def _mean_valid(p: np.ndarray) -> float:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else float("nan")


def evaluate_detections(frames: Sequence[ScoredFrame], classes: Sequence[str], max_dets: int = 100) -> DetectionMetrics:
    T, R, K = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(classes)
    precision = -np.ones((T, R, K))
    recall = -np.ones((T, K))
    gt_count = np.zeros(K, np.int64)
    det_count = np.zeros(K, np.int64)
    for k in range(K):
        scores, matched, ignored = [], [], []
        for f in frames:
            g = f.gt_cls == k
            gt_box, gt_ignore = f.gt_box[g], f.gt_ignore[g]
            d_rows = np.flatnonzero(f.det_cls == k)
            order = d_rows[np.argsort(-f.det_score[d_rows], kind="mergesort")][:max_dets]
            gt_count[k] += int(np.count_nonzero(~gt_ignore))
            det_count[k] += len(order)
            if len(order):
                m, on_ignored = _greedy_matches(box_iou(f.det_box[order], gt_box), gt_ignore)
                scores.append(f.det_score[order])
                matched.append(m)
                ignored.append(on_ignored | (~m & f.det_out_of_range[order][None, :]))
        if gt_count[k] == 0:
            continue
        if not scores:
            precision[:, :, k] = 0.0
            recall[:, k] = 0.0
            continue
        ranked = np.argsort(-np.concatenate(scores), kind="mergesort")
        m = np.concatenate(matched, axis=1)[:, ranked]
        ig = np.concatenate(ignored, axis=1)[:, ranked]
        tp_sum = np.cumsum(m & ~ig, axis=1, dtype=np.float64)
        fp_sum = np.cumsum(~m & ~ig, axis=1, dtype=np.float64)
        for t in range(T):
            rc = tp_sum[t] / gt_count[k]
            pr = tp_sum[t] / (fp_sum[t] + tp_sum[t] + np.spacing(1))
            recall[t, k] = rc[-1] if len(rc) else 0.0
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # monotone: the best precision at any higher recall
            at = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
            q = np.zeros(R)
            reached = at < len(pr)
            q[reached] = pr[at[reached]]
            precision[t, :, k] = q
    return DetectionMetrics(tuple(classes), precision, recall, gt_count, det_count)


def _greedy_matches(iou: np.ndarray, gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([T, D] matched, [T, D] matched to an ignored box) for detections (rows of `iou`, best score first).
    COCOeval's loop: labelled boxes scored first, then ignored; each detection takes the box of highest
    IoU >= t not yet taken (on equal IoU the later one), and stops at the ignored boxes once it has a
    scored one."""
    D, G = iou.shape
    matched = np.zeros((len(IOU_THRESHOLDS), D), bool)
    on_ignored = np.zeros((len(IOU_THRESHOLDS), D), bool)
    if G == 0:
        return matched, on_ignored
    order = np.argsort(gt_ignore, kind="mergesort")
    iou, gt_ignore = iou[:, order], gt_ignore[order]
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(G, bool)
        for d in range(D):
            best, floor = -1, min(threshold, 1 - 1e-10)
            for g in range(G):
                if taken[g]:
                    continue
                if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                    break
                if iou[d, g] < floor:
                    continue
                floor, best = iou[d, g], g
            if best > -1:
                taken[best] = True
                matched[t, d] = True
                on_ignored[t, d] = gt_ignore[best]
    return matched, on_ignored


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection area of every box in `a` [N, 4] with every box in `b` [M, 4] (x0, y0, x1, y1; continuous
    pixel coordinates) -> [N, M] float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(w, 0.0, None) * np.clip(h, 0.0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (x0, y0, x1, y1; continuous pixel
    coordinates, area = width x height as COCO counts it) -> [N, M] float64; 0 where the union is empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    inter = box_intersection(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def unmatched_per_frame(frames: Sequence[ScoredFrame], iou: float = 0.3) -> float:
    """Detections that overlap no labelled box of any class (IoU < `iou`, ignored boxes included), per frame:
    the objects a detector invents."""
    if not frames:
        return float("nan")
    count = 0
    for f in frames:
        if len(f.det_box):
            overlap = box_iou(f.det_box, f.gt_box)
            count += int(np.count_nonzero(~(overlap >= iou).any(axis=1))) if overlap.size else len(f.det_box)
    return count / len(frames)
