"""Closed-form kinematics of scripted actors: a speed profile along a heading plus smooth lateral moves.

Everything is an analytic function of time, so a state can be evaluated at any (jittered) capture time and
velocities are exact derivatives of positions.
"""

from __future__ import annotations

import math
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
        if times != sorted(times):
            raise ValueError("speed changes must be sorted by time")
        # (start time, start distance, start speed) of every segment, the first one starting at t = 0
        starts = [(0.0, 0.0, float(self.v0))]
        for c in self.changes:
            t0, s0, v0 = starts[-1]
            seg = self._segment(len(starts) - 1)
            s, v, _ = _ramp(c.t - t0, v0, seg)
            starts.append((c.t, s0 + s, v))
        object.__setattr__(self, "_starts", tuple(starts))

    def _segment(self, i: int) -> tuple[float, float]:
        """(accel magnitude, target speed) of segment i; segment 0 holds the initial speed."""
        if i == 0:
            return (1.0, float(self.v0))
        c = self.changes[i - 1]
        return (c.accel, c.target)

    def state(self, t: float) -> tuple[float, float, float]:
        """(distance m, speed m/s, acceleration m/s^2) at time t >= 0 s."""
        starts = self._starts  # type: ignore[attr-defined]
        i = len(starts) - 1
        while i > 0 and starts[i][0] > t:
            i -= 1
        t0, s0, v0 = starts[i]
        s, v, a = _ramp(t - t0, v0, self._segment(i))
        return s0 + s, v, a


def _ramp(dt: float, v0: float, segment: tuple[float, float]) -> tuple[float, float, float]:
    """Distance, speed and acceleration `dt` seconds into a ramp from v0 towards the segment's target."""
    accel, target = segment
    if dt <= 0.0:
        return 0.0, v0, 0.0
    a = math.copysign(accel, target - v0) if target != v0 else 0.0
    t_reach = abs(target - v0) / accel if a else 0.0
    if dt < t_reach:
        return v0 * dt + 0.5 * a * dt * dt, v0 + a * dt, a
    s_reach = v0 * t_reach + 0.5 * a * t_reach * t_reach
    return s_reach + target * (dt - t_reach), target, 0.0


@dataclass(frozen=True)
class LateralMove:
    """Shift sideways by `delta` (m, + = left of the heading) between `t` and `t + duration` (quintic ease)."""

    t: float
    duration: float
    delta: float


def _quintic(u: float) -> tuple[float, float, float]:
    """Smoothstep of order 5 and its first two derivatives, u clamped to [0, 1]."""
    if u <= 0.0 or u >= 1.0:
        return (0.0 if u <= 0.0 else 1.0), 0.0, 0.0
    return (u**3 * (10 - 15 * u + 6 * u * u), 30 * u * u * (1 - u) ** 2, 60 * u * (1 - u) * (1 - 2 * u))


@dataclass(frozen=True)
class Motion:
    """A path in the world frame: `origin` (x, y), a heading (rad), a speed profile and lateral moves."""

    origin: tuple[float, float]
    heading: float
    speed: SpeedProfile
    lateral: tuple[LateralMove, ...] = ()

    def state(self, t: float) -> "PlanarState":
        s, v, a = self.speed.state(t)
        lat = vlat = alat = 0.0
        for m in self.lateral:
            f, df, ddf = _quintic((t - m.t) / m.duration)
            lat += m.delta * f
            vlat += m.delta * df / m.duration
            alat += m.delta * ddf / (m.duration * m.duration)
        c, sn = math.cos(self.heading), math.sin(self.heading)
        x = self.origin[0] + s * c - lat * sn
        y = self.origin[1] + s * sn + lat * c
        vx, vy = v * c - vlat * sn, v * sn + vlat * c
        speed = math.hypot(vx, vy)
        yaw = math.atan2(vy, vx) if speed > 0.05 else self.heading
        return PlanarState(x, y, _wrap(yaw), vx, vy, a)

    def track(self, times: np.ndarray) -> np.ndarray:
        """[len(times), 3] array of (x, y, yaw)."""
        out = np.empty((len(times), 3))
        for i, t in enumerate(times):
            st = self.state(float(t))
            out[i] = (st.x, st.y, st.yaw)
        return out


@dataclass(frozen=True)
class PlanarState:
    x: float
    y: float
    yaw: float
    vx: float
    vy: float
    accel: float  # along the path (m/s^2); negative while braking


def _wrap(angle: float) -> float:
    return math.atan2(math.sin(angle), math.cos(angle))
