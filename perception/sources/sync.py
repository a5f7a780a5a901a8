"""Frame-set assembly: an anchor camera sets the time; other cameras join within a maximum skew.

A camera with no frame close enough to the anchor is *stale* for that set (None): the set goes on
without it (degraded), the engine is told the camera is missing and holds its temporal state.

Live, an anchor camera that delivers nothing usable for `anchor_lost_s` hands over to the next camera in
rig order that still delivers (the configured anchor takes back over once its frames join sets again);
frames overwritten while the node waits for an anchor frame are not counted as dropped (that is an
outage, not lag).
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
    anchor_lost_s: float = 1.0  # live: an anchor silent this long hands over to the next camera

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError("sync.cameras: at least one camera is needed")
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"sync.cameras: duplicate camera names in {list(self.cameras)}")
        if self.anchor not in self.cameras:
            raise ConfigError(f"sync.anchor: {self.anchor!r} is not one of the cameras {list(self.cameras)}")
        if not 0 <= self.max_skew_ms < 1000:
            raise ConfigError(f"sync.max_skew_ms: must be in [0, 1000), got {self.max_skew_ms}")
        if not self.anchor_lost_s > 0:
            raise ConfigError(f"sync.anchor_lost_s: must be > 0, got {self.anchor_lost_s}")

    @property
    def max_skew_ns(self) -> int:
        return int(round(self.max_skew_ms * 1e6))


@dataclass
class FrameSet:
    seq: int
    t_ns: int  # the anchor's capture time: the time of every output for this set
    frames: dict[str, CapturedFrame | None]  # every rig camera in rig order; None = stale
    dropped: dict[str, int] = field(default_factory=dict)  # frames dropped per camera so far (cumulative)
    anchor: str = ""  # the camera whose frame set the time ("" = the configured anchor)

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
        return FrameSet(seq, anchor.t_ns, frames, dict(self.dropped), self.config.anchor)


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
        self._last_good: dict[str, float | None] = {name: None for name in config.cameras}  # monotonic s
        self._outage_drops = {name: 0 for name in config.cameras}
        self._started = time.monotonic()
        self._anchor = config.anchor
        self._last_t_ns: int | None = None

    def next_set(self, timeout_s: float) -> FrameSet | None:
        """The next set, or None if the anchor produced nothing within timeout_s (or its source closed)."""
        cfg = self.config
        anchor_name = self._choose_anchor()
        anchor = self._wait_anchor(anchor_name, timeout_s)
        if anchor is None:
            return None
        self._accept(anchor_name, anchor)
        # Late cameras get up to one skew interval of (monotonic) waiting; stamps decide membership.
        deadline = time.monotonic() + cfg.max_skew_ms / 1e3
        frames: dict[str, CapturedFrame | None] = {}
        for name in cfg.cameras:
            frames[name] = anchor if name == anchor_name else self._join(name, anchor.t_ns, deadline)
            if name != anchor_name and frames[name] is not None:
                self._accept(name, frames[name])
        self._seq += 1
        self._last_t_ns = anchor.t_ns
        dropped = {name: slot.dropped - self._outage_drops[name] for name, slot in self.slots.items()}
        return FrameSet(self._seq - 1, anchor.t_ns, frames, dropped, anchor_name)

    @property
    def anchor(self) -> str:
        """The camera anchoring the frame sets now."""
        return self._anchor

    def _choose_anchor(self) -> str:
        """The configured anchor unless it is lost; else the first camera after it in rig order that is not
        lost, else the first with a frame waiting."""
        cfg = self.config
        now = time.monotonic()
        start = cfg.cameras.index(cfg.anchor)
        order = cfg.cameras[start:] + cfg.cameras[:start]
        lost_s = cfg.anchor_lost_s

        def lost(name: str) -> bool:
            last = self._last_good[name]
            return now - (self._started if last is None else last) > lost_s

        choice = next((n for n in order if not lost(n)), None)
        if choice is None:
            choice = next((n for n in order if self.slots[n].wait(0)), self._anchor)
        self._anchor = choice
        return choice

    def _wait_anchor(self, name: str, timeout_s: float) -> CapturedFrame | None:
        """The anchor's next frame later than the last set; frames other cameras lose meanwhile are an
        outage's, not lag."""
        before = {n: slot.dropped for n, slot in self.slots.items()}
        slot = self.slots[name]
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not slot.wait(remaining):
                    return None
                frame = slot.take()
                if frame is not None and (self._last_t_ns is None or frame.t_ns > self._last_t_ns):
                    return frame
        finally:
            for n, slot_n in self.slots.items():
                if n != name:
                    self._outage_drops[n] += slot_n.dropped - before[n]

    def _accept(self, name: str, frame: CapturedFrame) -> None:
        self._held[name] = frame
        self._last_used_seq[name] = frame.seq
        self._last_good[name] = time.monotonic()

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
                return held
            if usable and held.t_ns > t_anchor + skew:
                return None  # newer than this set: keep it for the next one
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not slot.wait(remaining):
                return None
