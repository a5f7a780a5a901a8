"""Gated optimal assignment (Hungarian, via scipy) and box overlap."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def gated_assignment(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one pairs (rows, cols) among entries with cost <= max_cost.

    Forbidden pairs get a cost larger than any sum of allowed ones, so the solver first maximises the number
    of allowed pairs, then minimises their cost; forbidden pairs it had to use are dropped afterwards.
    """
    if cost.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    allowed = np.isfinite(cost) & (cost <= max_cost)
    big = 1.0 + 2.0 * max(1, min(cost.shape)) * max(abs(max_cost), 1.0)
    rows, cols = linear_sum_assignment(np.where(allowed, cost, big))
    keep = allowed[rows, cols]
    return rows[keep], cols[keep]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4] with every box in b [M, 4] (x0 y0 x1 y1) -> [N, M]."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
