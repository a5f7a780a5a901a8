"""Box overlap and one-to-one box matching, shared by the golden-run comparison and the metrics."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from perception.eval.detection import box_iou


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
