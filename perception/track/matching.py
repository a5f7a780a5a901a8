"""Gated optimal assignment (Hungarian, via scipy)."""

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

