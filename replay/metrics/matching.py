"""Box overlap and one-to-one box matching, shared by the golden-run comparison and the metrics."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (x0, y0, x1, y1; continuous pixel
    coordinates, area = width x height as COCO counts it) -> [N, M] float64; 0 where the union is empty."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_boxes(iou: np.ndarray, min_iou: float, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching (Hungarian) of rows to columns: as many pairs with IoU >= min_iou as possible,
    then the largest total IoU. `allowed` [N, M] bool further restricts pairs (same camera and class).
    Returns (rows, cols) of the matched pairs."""
    valid = iou >= min_iou
    if allowed is not None:
        valid &= allowed
    if not valid.any():
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # an invalid pair costs more than any set of valid ones, so the count of valid pairs is maximised first
    cost = np.where(valid, 1.0 - iou, 2.0 * min(iou.shape) + 1.0)
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return rows[keep], cols[keep]
