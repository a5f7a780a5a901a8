"""Node health: ok / degraded / fault with reasons, per-camera states, latency percentiles, drop ratio.

Pure bookkeeping fed once per frame set (frame-set time drives the health clock, so replays are
deterministic); the process wrapper also asks for a report when no frame set arrives at all.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from perception.node.config import HealthConfig


@dataclass(frozen=True)
class HealthReport:
    state: str                      # ok | degraded | fault
    reasons: tuple[str, ...]
    camera_states: tuple[str, ...]  # ok | stale | lost, rig order
    latency_p50_ms: float
    latency_p99_ms: float
    rate_hz: float
    drop_ratio: float
    bad_frames: int


class HealthMonitor:
    def __init__(self, cameras: tuple[str, ...], anchor: str, config: HealthConfig) -> None:
        self.cameras = cameras
        self.anchor = anchor
        self.config = config
        self.bad_frames = 0
        self.engine_errors = 0
        self._engine_failed_last = False
        self._last_fresh_ns: dict[str, int | None] = {c: None for c in cameras}
        self._stale_now: set[str] = set()
        self._window: collections.deque[tuple[int, float]] = collections.deque()  # (frame ns, latency ms)
        self._drops: collections.deque[tuple[int, int, int]] = collections.deque()  # (ns, dropped, captured)
        self._next_report_ns: int | None = None
        self._t_ns: int | None = None

    def on_frame_set(self, t_ns: int, stale: list[str], dropped_total: int, captured_total: int,
                     latency_ms: float, engine_ok: bool) -> bool:
        """Record one frame set; True when a health report is due (at the configured rate)."""
        self._t_ns = t_ns
        for camera in self.cameras:
            if camera not in stale:
                self._last_fresh_ns[camera] = t_ns
        self._stale_now = set(stale)
        self._engine_failed_last = not engine_ok
        if not engine_ok:
            self.engine_errors += 1
        self._window.append((t_ns, latency_ms))
        self._drops.append((t_ns, dropped_total, captured_total))
        horizon = t_ns - int(self.config.window_s * 1e9)
        while self._window and self._window[0][0] < horizon:
            self._window.popleft()
        while len(self._drops) > 1 and self._drops[0][0] < horizon:
            self._drops.popleft()
        period = int(1e9 / self.config.rate_hz)
        if self._next_report_ns is None or t_ns >= self._next_report_ns:
            self._next_report_ns = t_ns + period
            return True
        return False

    def report(self, no_frames_for_s: float | None = None) -> HealthReport:
        """The current health; `no_frames_for_s` (wall time) when the anchor has gone silent."""
        reasons: list[str] = []
        states = []
        for camera in self.cameras:
            last = self._last_fresh_ns[camera]
            silent_s = (self._t_ns - last) * 1e-9 if last is not None and self._t_ns is not None else None
            if last is None or (silent_s is not None and silent_s >= self.config.lost_after_s):
                states.append("lost")
                reasons.append(f"camera {camera} lost")
            elif camera in self._stale_now:
                states.append("stale")
                reasons.append(f"camera {camera} stale")
            else:
                states.append("ok")
        fault = False
        if no_frames_for_s is not None:
            fault = True
            reasons.append(f"no frame set for {no_frames_for_s:.1f} s")
        if self._engine_failed_last:
            fault = True
            reasons.append("engine error")
        if all(s == "lost" for s in states):
            fault = True
        elif states[self.cameras.index(self.anchor)] == "lost" and "ok" in states:
            reasons.append(f"anchor camera {self.anchor} lost: the next camera anchors the frame sets")
        elif all(s != "ok" for s in states):
            fault = True
        latencies = np.array([lat for _, lat in self._window], np.float64)
        p50, p99 = (np.percentile(latencies, [50, 99]) if latencies.size else (float("nan"), float("nan")))
        rate = 0.0
        if len(self._window) > 1:
            span_s = (self._window[-1][0] - self._window[0][0]) * 1e-9
            rate = (len(self._window) - 1) / span_s if span_s > 0 else 0.0
        drop_ratio = 0.0
        if len(self._drops) > 1:
            dropped = self._drops[-1][1] - self._drops[0][1]
            captured = self._drops[-1][2] - self._drops[0][2]
            drop_ratio = dropped / captured if captured > 0 else 0.0
        if drop_ratio > self.config.lag_drop_ratio:
            reasons.append(f"lagging: frame drop {drop_ratio:.0%} > {self.config.lag_drop_ratio:.0%}")
        state = "fault" if fault else ("degraded" if reasons else "ok")
        return HealthReport(state, tuple(reasons), tuple(states), float(p50), float(p99), rate, drop_ratio,
                            self.bad_frames)
