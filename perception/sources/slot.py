"""A bounded one-frame slot between a source thread and the node: newest wins, drops are counted."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from perception.frame import Frame


@dataclass(frozen=True)
class CapturedFrame:
    camera: str
    t_ns: int  # capture time stamped by the source (driver / container / recording), never wall time
    frame: Frame
    seq: int  # per-camera sequence number assigned by the source
    arrival_ns: int = -1  # CLOCK_MONOTONIC when the node's side received it: latency diagnostics only


class LatestFrameSlot:
    """Holds at most one frame. `put` replaces an untaken frame (a drop); `take` empties the slot."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: CapturedFrame | None = None
        self.dropped = 0
        self.received = 0
        self.closed = False

    def put(self, frame: CapturedFrame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.received += 1
            self._cond.notify_all()

    def take(self) -> CapturedFrame | None:
        with self._cond:
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def wait_empty(self, timeout_s: float) -> bool:
        """Block until the node took the frame (or the slot closed); True when the slot is empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is None or self.closed, timeout=timeout_s)
            return self._frame is None

    def wait(self, timeout_s: float) -> bool:
        """Block until a frame is present or the slot is closed; True when a frame is present."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self.closed, timeout=timeout_s)
            return self._frame is not None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
