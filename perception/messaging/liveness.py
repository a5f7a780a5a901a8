"""Is a topic alive and at its nominal rate? Pure: the caller passes the receive times (monotonic
seconds), so tests drive it with any clock.

The rate is measured from sequence numbers over a time window, (seq_last - seq_first) / (t_last - t_first),
so it is the publisher's rate even when this subscriber conflates or loses messages.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LivenessStatus:
    alive: bool       # a message arrived within timeout_periods nominal periods
    freq_ok: bool     # alive and the measured rate is within tolerance of the nominal rate
    rate_hz: float    # measured publication rate, NaN until two messages are in the window
    age_s: float      # time since the last message, inf before the first
    missed: int       # publications not received (sequence gaps: dropped or conflated)


class Liveness:
    def __init__(self, nominal_hz: float, timeout_periods: float = 5.0, tolerance: float = 0.2,
                 window_periods: float = 10.0):
        if not (nominal_hz > 0 and timeout_periods > 0 and 0 < tolerance < 1 and window_periods >= 2):
            raise ValueError(f"invalid liveness parameters: nominal_hz={nominal_hz}, timeout_periods="
                             f"{timeout_periods}, tolerance={tolerance}, window_periods={window_periods}")
        self.nominal_hz = nominal_hz
        self.timeout_s = timeout_periods / nominal_hz
        self.tolerance = tolerance
        self.window_s = window_periods / nominal_hz
        self.missed = 0
        self._window: deque[tuple[float, int]] = deque()

    def on_message(self, t: float, seq: int) -> None:
        if self._window:
            last_seq = self._window[-1][1]
            if seq <= last_seq:  # the publisher restarted: its sequence starts again
                self._window.clear()
            else:
                self.missed += seq - last_seq - 1
        self._window.append((t, seq))
        while self._window[0][0] < t - self.window_s:
            self._window.popleft()

    def status(self, now: float) -> LivenessStatus:
        if not self._window:
            return LivenessStatus(False, False, math.nan, math.inf, self.missed)
        (t0, seq0), (t1, seq1) = self._window[0], self._window[-1]
        age = now - t1
        alive = age <= self.timeout_s
        rate = (seq1 - seq0) / (t1 - t0) if t1 > t0 else math.nan
        freq_ok = alive and abs(rate - self.nominal_hz) <= self.tolerance * self.nominal_hz
        return LivenessStatus(alive, freq_ok, rate, age, self.missed)
