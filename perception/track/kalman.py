"""Batched linear Kalman filter with polynomial motion models.

A state of order k (2: constant velocity, 3: constant acceleration) over d axes is
[position (d), velocity (d)(, acceleration (d))]; arrays carry a leading batch axis N so that all tracks of a
camera (or all fused objects) are predicted and updated in one call. Process noise is the discrete
white-noise model of the highest derivative's rate (acceleration for constant velocity, jerk for constant
acceleration): each axis receives an independent random value with the given std, constant over a step.
Measurements are of the state's first m entries (H = [I 0]: the position, or a box and then its velocity),
so the updates slice the state instead of multiplying by H.
"""

from __future__ import annotations

from functools import cache
from math import factorial

import numpy as np


def predict(x: np.ndarray, P: np.ndarray, dt: float | np.ndarray, noise_std: np.ndarray,
            order: int) -> tuple[np.ndarray, np.ndarray]:
    """x [N, order*d], P [N, n, n], dt (s) scalar or [N], noise_std [N, d] -> predicted (x, P)."""
    n_batch, n = x.shape
    power, noise_power, axis, same_axis = _layout(order, n // order)
    # dt^k / k! for k = 0 .. order, and 0 (column order + 1) for the entries F leaves empty
    steps = np.zeros((n_batch, order + 2))
    steps[:, :order + 1] = np.reshape(np.asarray(dt, np.float64), (-1, 1)) ** _POWERS[order] / _FACTORIALS[order]
    F = steps[:, power]
    x = np.einsum("nij,nj->ni", F, x)
    g = steps[:, noise_power] * noise_std[:, axis]
    Q = g[:, :, None] * g[:, None, :] * same_axis
    P = F @ P @ F.transpose(0, 2, 1) + Q
    return x, P


_POWERS = {order: np.arange(order + 1, dtype=np.float64) for order in (2, 3)}
_FACTORIALS = {order: np.array([factorial(k) for k in range(order + 1)], np.float64) for order in (2, 3)}


@cache
def _layout(order: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a state of `order` over d axes: the power of dt in each entry of F ([n, n]; order + 1 where F is 0),
    the power of dt by which each state entry takes the noise (order - its derivative) and its axis ([n]),
    and which pairs of entries share an axis ([n, n])."""
    derivative, axis = np.divmod(np.arange(order * d), d)
    same_axis = axis[:, None] == axis[None, :]
    gap = derivative[None, :] - derivative[:, None]
    power = np.where(same_axis & (gap >= 0), gap, order + 1)
    return power, order - derivative, axis, same_axis


def update(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [N, n], P [N, n, n], z [N, m] measuring the first m entries of the state (H = [I 0]), R [N, m, m]
    -> updated (x, P) (Joseph form)."""
    m = z.shape[1]
    HP = P[:, :m]
    S = HP[:, :, :m] + R
    K = np.linalg.solve(S, HP).transpose(0, 2, 1)  # P H^T S^-1, with S and P symmetric
    x = x + np.einsum("nij,nj->ni", K, z - x[:, :m])
    A = np.repeat(np.eye(P.shape[1])[None], len(P), 0)  # I - K H
    A[:, :, :m] -= K
    P = A @ P @ A.transpose(0, 2, 1) + K @ R @ K.transpose(0, 2, 1)
    return x, P


def mahalanobis2(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of every measurement to every state: x [N, n], z [M, m] (the first m
    entries of the state) -> [N, M].

    P [N, n, n] and R [M, m, m]: the innovation covariance of pair (i, j) is P_i[:m, :m] + R_j (H P_i H^T + R_j).
    """
    if len(x) == 0 or len(z) == 0:
        return np.zeros((len(x), len(z)))
    m = z.shape[1]
    S = P[:, None, :m, :m] + R[None]
    innovation = z[None] - x[:, None, :m]
    return np.einsum("nmi,nmi->nm", innovation, np.linalg.solve(S, innovation[..., None])[..., 0])


def mahalanobis2_paired(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of measurement i to state i: x [N, n], P [N, n, n], z [N, m] (the first m
    entries of the state), R [N, m, m] -> [N]."""
    m = z.shape[1]
    S = P[:, :m, :m] + R
    innovation = z - x[:, :m]
    return np.einsum("ni,ni->n", innovation, np.linalg.solve(S, innovation[..., None])[..., 0])
