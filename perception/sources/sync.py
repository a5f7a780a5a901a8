"""Frame-set assembly: an anchor camera sets the time; other cameras join within a maximum skew.

A camera with no frame close enough to the anchor is *stale* for that set (None): the set goes on
without it (degraded), the engine is told the camera is missing and holds its temporal state.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from perception.errors import ConfigError
from perception.sources.slot import CapturedFrame, LatestFrameSlot


@dataclass(frozen=True)
class SyncConfig:
    cameras: tuple[str, ...]  # rig order: batch index n is cameras[n]
    anchor: str
    max_skew_ms: float = 20.0

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError("sync.cameras: at least one camera is needed")
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"sync.cameras: duplicate camera names in {list(self.cameras)}")
        if self.anchor not in self.cameras:
            raise ConfigError(f"sync.anchor: {self.anchor!r} is not one of the cameras {list(self.cameras)}")
        if not 0 <= self.max_skew_ms < 1000:
            raise ConfigError(f"sync.max_skew_ms: must be in [0, 1000), got {self.max_skew_ms}")

    @property
    def max_skew_ns(self) -> int:
        return int(round(self.max_skew_ms * 1e6))


@dataclass
class FrameSet:
    seq: int
    t_ns: int  # the anchor's capture time: the time of every output for this set
    frames: dict[str, CapturedFrame | None]  # every rig camera in rig order; None = stale
    dropped: dict[str, int] = field(default_factory=dict)  # frames dropped per camera so far (cumulative)

    @property
    def stale(self) -> list[str]:
        return [name for name, f in self.frames.items() if f is None]

    @property
    def skew_ns(self) -> dict[str, int]:
        return {name: f.t_ns - self.t_ns for name, f in self.frames.items() if f is not None}


class LockstepSynchronizer:
    """Deterministic assembly from a time-ordered stream of frames (recorded drives).

    An anchor frame is closed once the stream has passed its time + max skew; each other camera
    contributes its unused frame nearest to the anchor within the skew. Frames that never join a set
    are counted as dropped, never silently lost.
    """

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self.dropped = {name: 0 for name in config.cameras}
        self.unknown_camera_frames = 0

    def frame_sets(self, frames: Iterable[CapturedFrame]) -> Iterator[FrameSet]:
        cfg = self.config
        pending: collections.deque[CapturedFrame] = collections.deque()  # anchor frames not yet closed
        buffers: dict[str, collections.deque[CapturedFrame]] = {
            name: collections.deque() for name in cfg.cameras if name != cfg.anchor
        }
        seq = 0
        for frame in frames:
            if frame.camera not in self.dropped:
                self.unknown_camera_frames += 1
                continue
            while pending and frame.t_ns > pending[0].t_ns + cfg.max_skew_ns:
                yield self._close(pending.popleft(), buffers, seq)
                seq += 1
            if frame.camera == cfg.anchor:
                pending.append(frame)
            else:
                buffers[frame.camera].append(frame)
        while pending:
            yield self._close(pending.popleft(), buffers, seq)
            seq += 1
        for name, buf in buffers.items():
            self.dropped[name] += len(buf)
            buf.clear()

    def _close(self, anchor: CapturedFrame, buffers: Mapping[str, collections.deque], seq: int) -> FrameSet:
        skew = self.config.max_skew_ns
        frames: dict[str, CapturedFrame | None] = {}
        for name in self.config.cameras:
            if name == self.config.anchor:
                frames[name] = anchor
                continue
            buf = buffers[name]
            while buf and buf[0].t_ns < anchor.t_ns - skew:  # too old for this and every later anchor
                buf.popleft()
                self.dropped[name] += 1
            best = min((f for f in buf if abs(f.t_ns - anchor.t_ns) <= skew),
                       key=lambda f: (abs(f.t_ns - anchor.t_ns), f.t_ns), default=None)
            if best is not None:
                while buf[0] is not best:  # frames before the chosen one can no longer join
                    buf.popleft()
                    self.dropped[name] += 1
                buf.popleft()
            frames[name] = best
        return FrameSet(seq, anchor.t_ns, frames, dict(self.dropped))


class LiveSynchronizer:
    """Assembly from latest-frame slots filled by source threads (cameras, frame bus, realtime replay)."""

    def __init__(self, config: SyncConfig, slots: Mapping[str, LatestFrameSlot]) -> None:
        missing = [name for name in config.cameras if name not in slots]
        if missing:
            raise ConfigError(f"sync: no source for cameras {missing}")
        self.config = config
        self.slots = slots
        self._seq = 0
        self._held: dict[str, CapturedFrame | None] = {name: None for name in config.cameras}
        self._last_used_seq: dict[str, int] = {name: -1 for name in config.cameras}

    def next_set(self, timeout_s: float) -> FrameSet | None:
        """The next set, or None if the anchor produced nothing within timeout_s (or its source closed)."""
        cfg = self.config
        anchor_slot = self.slots[cfg.anchor]
        if not anchor_slot.wait(timeout_s):
            return None
        anchor = anchor_slot.take()
        assert anchor is not None
        # Late cameras get up to one skew interval of (monotonic) waiting; stamps decide membership.
        deadline = time.monotonic() + cfg.max_skew_ms / 1e3
        frames: dict[str, CapturedFrame | None] = {}
        for name in cfg.cameras:
            if name == cfg.anchor:
                frames[name] = anchor
                continue
            frames[name] = self._join(name, anchor.t_ns, deadline)
        self._seq += 1
        dropped = {name: slot.dropped for name, slot in self.slots.items()}
        return FrameSet(self._seq - 1, anchor.t_ns, frames, dropped)

    def _join(self, name: str, t_anchor: int, deadline: float) -> CapturedFrame | None:
        skew = self.config.max_skew_ns
        slot = self.slots[name]
        while True:
            fresh = slot.take()
            if fresh is not None:
                self._held[name] = fresh
            held = self._held[name]
            usable = held is not None and held.seq != self._last_used_seq[name]
            if usable and abs(held.t_ns - t_anchor) <= skew:
                self._last_used_seq[name] = held.seq
                return held
            if usable and held.t_ns > t_anchor + skew:
                return None  # newer than this set: keep it for the next one
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not slot.wait(remaining):
                return None
