"""Closed-form kinematics of scripted actors: a speed profile along a heading plus smooth lateral moves.

Everything is an analytic function of time, so a state can be evaluated at any (jittered) capture time and
velocities are exact derivatives of positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpeedChange:
    """From `t` (s) on, change speed at `|accel|` (m/s^2) until `target` (m/s, >= 0) is reached, then hold."""

    t: float
    accel: float
    target: float


@dataclass(frozen=True)
class SpeedProfile:
    """Distance travelled along the heading: starts at `v0` and follows `changes` (sorted by time)."""

    v0: float
    changes: tuple[SpeedChange, ...] = ()

    def __post_init__(self) -> None:
        if self.v0 < 0 or any(c.target < 0 or c.accel <= 0 for c in self.changes):
            raise ValueError("speeds must be >= 0 and accelerations > 0 (the sign comes from the target)")
        times = [c.t for c in self.changes]
        if times != sorted(times) or any(t < 0 for t in times):
            raise ValueError("speed changes must be at t >= 0, sorted by time")
        # Segment i starts at t_i with distance s_i and speed v_i and ramps at accel_i towards target_i;
        # segment 0 holds the initial speed.
        t0 = np.array([0.0] + times)
        accel = np.array([1.0] + [c.accel for c in self.changes])
        target = np.array([float(self.v0)] + [float(c.target) for c in self.changes])
        s0, v0 = np.zeros(len(t0)), np.full(len(t0), float(self.v0))
        for i in range(1, len(t0)):
            s, v, _ = _ramp(np.array([t0[i] - t0[i - 1]]), v0[i - 1:i], accel[i - 1:i], target[i - 1:i])
            s0[i], v0[i] = s0[i - 1] + s[0], v[0]
        object.__setattr__(self, "_segments", (t0, s0, v0, accel, target))


def _ramp(dt: np.ndarray, v0: np.ndarray, accel: np.ndarray, target: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance, speed and acceleration `dt` seconds into ramps from v0 towards target at |accel|."""
    a = np.sign(target - v0) * accel
    t_reach = np.abs(target - v0) / accel
    ramping = dt < t_reach
    s_reach = v0 * t_reach + 0.5 * a * t_reach * t_reach
    s = np.where(ramping, v0 * dt + 0.5 * a * dt * dt, s_reach + target * (dt - t_reach))
    return s, np.where(ramping, v0 + a * dt, target), np.where(ramping, a, 0.0)


@dataclass(frozen=True)
class LateralMove:
    """Shift sideways by `delta` (m, + = left of the heading) between `t` and `t + duration` (quintic ease)."""

    t: float
    duration: float
    delta: float


def _quintic(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smoothstep of order 5 and its first two derivatives, u clamped to [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10 - 15 * u + 6 * u * u), 30 * u * u * (1 - u) ** 2, 60 * u * (1 - u) * (1 - 2 * u)


@dataclass(frozen=True)
class Motion:
    """A path in the world frame: `origin` (x, y), a heading (rad), a speed profile and lateral moves."""

    origin: tuple[float, float]
    heading: float
    speed: SpeedProfile
    lateral: tuple[LateralMove, ...] = ()

    def states(self, t: np.ndarray) -> np.ndarray:
        """[len(t), 6] array of (x, y, yaw, vx, vy, accel along the path) at times t (s)."""
        return MotionBatch((self,)).states(t)[0]

    def state(self, t: float) -> "PlanarState":
        return PlanarState(*(float(v) for v in self.states(np.array([t]))[0]))

    def track(self, times: np.ndarray) -> np.ndarray:
        """[len(times), 3] array of (x, y, yaw)."""
        return self.states(times)[:, :3]


class MotionBatch:
    """Several motions evaluated together (one numpy pass for all actors of a world at one instant)."""

    def __init__(self, motions: tuple[Motion, ...]):
        n = len(motions)
        segments = max((len(m.speed.changes) + 1 for m in motions), default=1)
        moves = max((len(m.lateral) for m in motions), default=0)
        self.t0 = np.full((n, segments), np.inf)      # padding segments never start
        self.s0, self.v0 = np.zeros((n, segments)), np.zeros((n, segments))
        self.accel, self.target = np.ones((n, segments)), np.zeros((n, segments))
        self.move_t, self.move_duration = np.zeros((n, moves)), np.ones((n, moves))
        self.move_delta = np.zeros((n, moves))         # padding moves shift by 0
        for i, m in enumerate(motions):
            rows = m.speed._segments  # type: ignore[attr-defined]
            k = len(rows[0])
            for table, values in zip((self.t0, self.s0, self.v0, self.accel, self.target), rows):
                table[i, :k] = values
            for j, move in enumerate(m.lateral):
                self.move_t[i, j], self.move_duration[i, j], self.move_delta[i, j] = move.t, move.duration, move.delta
        self.origin = np.array([m.origin for m in motions], dtype=np.float64).reshape(n, 2)
        self.heading = np.array([m.heading for m in motions], dtype=np.float64)

    def states(self, t: np.ndarray) -> np.ndarray:
        """[motions, len(t), 6] array of (x, y, yaw, vx, vy, accel along the path) at times t (s)."""
        t = np.asarray(t, dtype=np.float64)[None, :]
        # current segment [N, T]; times before 0 (a capture jittered early) extrapolate the initial speed
        i = np.maximum((self.t0[:, :, None] <= t[:, None, :]).sum(axis=1) - 1, 0)
        pick = lambda table: np.take_along_axis(table, i, axis=1)  # noqa: E731
        s, v, a = _ramp(t - pick(self.t0), pick(self.v0), pick(self.accel), pick(self.target))
        s += pick(self.s0)
        u = (t[:, None, :] - self.move_t[:, :, None]) / self.move_duration[:, :, None]
        f, df, _ = _quintic(u)
        lat = (self.move_delta[:, :, None] * f).sum(axis=1)
        vlat = (self.move_delta[:, :, None] * df / self.move_duration[:, :, None]).sum(axis=1)
        c, sn = np.cos(self.heading)[:, None], np.sin(self.heading)[:, None]
        vx, vy = v * c - vlat * sn, v * sn + vlat * c
        moving = np.hypot(vx, vy) > 0.05
        yaw = np.where(moving, np.arctan2(vy, vx), np.arctan2(sn, c))
        x = self.origin[:, 0:1] + s * c - lat * sn
        y = self.origin[:, 1:2] + s * sn + lat * c
        return np.stack([x, y, yaw, vx, vy, a], axis=-1)


@dataclass(frozen=True)
class PlanarState:
    x: float
    y: float
    yaw: float
    vx: float
    vy: float
    accel: float  # along the path (m/s^2); negative while braking

