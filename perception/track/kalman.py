"""Batched linear Kalman filter with polynomial motion models.

A state of order k (2: constant velocity, 3: constant acceleration) over d axes is
[position (d), velocity (d)(, acceleration (d))]; arrays carry a leading batch axis N so that all tracks of a
camera (or all fused objects) are predicted and updated in one call. Process noise is the discrete
white-noise model of the highest derivative's rate (acceleration for constant velocity, jerk for constant
acceleration): each axis receives an independent random value with the given std, constant over a step.
"""

from __future__ import annotations

from functools import cache
from math import factorial

import numpy as np


def predict(x: np.ndarray, P: np.ndarray, dt: float | np.ndarray, noise_std: np.ndarray,
            order: int) -> tuple[np.ndarray, np.ndarray]:
    """x [N, order*d], P [N, n, n], dt (s) scalar or [N], noise_std [N, d] -> predicted (x, P)."""
    n_batch, n = x.shape
    power, derivative, axis, same_axis = _layout(order, n // order)
    dt = np.broadcast_to(np.asarray(dt, np.float64), (n_batch,))
    # dt^k / k! for k = 0 .. order, and 0 (column order + 1) for the entries F leaves empty
    steps = np.concatenate([dt[:, None] ** _POWERS[order] / _FACTORIALS[order], np.zeros((n_batch, 1))], 1)
    F = steps[:, power]
    x = np.einsum("nij,nj->ni", F, x)
    g = steps[:, order - derivative] * noise_std[:, axis]
    Q = g[:, :, None] * g[:, None, :] * same_axis
    P = F @ P @ F.transpose(0, 2, 1) + Q
    return x, P


_POWERS = {order: np.arange(order + 1, dtype=np.float64) for order in (2, 3)}
_FACTORIALS = {order: np.array([factorial(k) for k in range(order + 1)], np.float64) for order in (2, 3)}


@cache
def _layout(order: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a state of `order` over d axes: the power of dt in each entry of F ([n, n]; order + 1 where F is 0),
    each state entry's derivative and axis ([n]), and which pairs of entries share an axis ([n, n])."""
    derivative, axis = np.divmod(np.arange(order * d), d)
    same_axis = axis[:, None] == axis[None, :]
    gap = derivative[None, :] - derivative[:, None]
    power = np.where(same_axis & (gap >= 0), gap, order + 1)
    return power, derivative, axis, same_axis


def update(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray,
           H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [N, n], P [N, n, n], z [N, m], R [N, m, m], H [m, n] -> updated (x, P) (Joseph form)."""
    HP = H @ P
    S = HP @ H.T + R
    K = np.linalg.solve(S, HP).transpose(0, 2, 1)  # P H^T S^-1, with S and P symmetric
    x = x + np.einsum("nij,nj->ni", K, z - x @ H.T)
    A = np.eye(P.shape[1]) - K @ H
    P = A @ P @ A.transpose(0, 2, 1) + K @ R @ K.transpose(0, 2, 1)
    return x, P


def mahalanobis2(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of every measurement to every state: x [N, n], z [M, m] -> [N, M].

    P [N, n, n] and R [M, m, m]: the innovation covariance of pair (i, j) is H P_i H^T + R_j.
    """
    if len(x) == 0 or len(z) == 0:
        return np.zeros((len(x), len(z)))
    S = (H @ P @ H.T)[:, None] + R[None]
    innovation = z[None] - (x @ H.T)[:, None]
    return np.einsum("nmi,nmi->nm", innovation, np.linalg.solve(S, innovation[..., None])[..., 0])


def mahalanobis2_paired(x: np.ndarray, P: np.ndarray, z: np.ndarray, R: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of measurement i to state i: x [N, n], P [N, n, n], z [N, m], R [N, m, m]
    -> [N]."""
    S = H @ P @ H.T + R
    innovation = z - x @ H.T
    return np.einsum("ni,ni->n", innovation, np.linalg.solve(S, innovation[..., None])[..., 0])
