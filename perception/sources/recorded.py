"""A recorded drive as a source, in one of three pacings:

- `lockstep` pulls every frame in order (deterministic; replay and regression);
- `fast` pushes every frame through the live path as fast as the node takes them (nothing dropped);
- `realtime` pushes them at their recorded times and drops what the node cannot keep up with (as live
  cameras do).

`loop=True` starts the drive over when it ends, with times shifted so that they keep increasing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from perception.errors import DriveError
from perception.io.drive import DriveReader
from perception.sources.base import Arrival, BadFrame, Producer, PushSource
from perception.sources.slot import CapturedFrame
from perception.sources.sync import LockstepSynchronizer, SyncConfig

PACINGS = ("realtime", "fast", "lockstep")
LOOP_GAP_NS = int(1e8)  # time between the last frame of a pass and the first of the next


class DriveSource(PushSource):
    def __init__(self, drive: DriveReader, pacing: str, loop: bool = False) -> None:
        if pacing not in PACINGS:
            raise ValueError(f"pacing must be one of {PACINGS}, got {pacing!r}")
        super().__init__(drive.rig)
        self.drive = drive
        self.pacing = pacing
        self.loop = loop
        self.backpressure = pacing == "fast"

    def arrivals(self, sync: SyncConfig, on_bad_frame: BadFrame, stop: threading.Event) -> Iterator[Arrival | None]:
        if self.pacing != "lockstep":
            yield from super().arrivals(sync, on_bad_frame, stop)
            return
        delivered = 0

        def counted() -> Iterator[CapturedFrame]:
            nonlocal delivered
            for frame in self.frames(sync.cameras, on_bad_frame, stop):
                delivered += 1
                yield frame

        for frame_set in LockstepSynchronizer(sync).frame_sets(counted()):
            yield Arrival(frame_set, time.monotonic_ns(), delivered)

    def producers(self, cameras: tuple[str, ...], on_bad_frame: BadFrame) -> list[tuple[str, Producer, tuple[str, ...]]]:
        def produce(stop: threading.Event) -> Iterator[CapturedFrame]:
            frames = self.frames(cameras, on_bad_frame, stop)
            return _paced(frames, stop) if self.pacing == "realtime" else frames

        return [("drive", produce, cameras)]

    def frames(self, cameras: tuple[str, ...], on_bad_frame: BadFrame, stop: threading.Event) -> Iterator[CapturedFrame]:
        """The drive's frames of `cameras` (looped when configured); malformed frames go to `on_bad_frame`."""
        def bad(e: DriveError) -> None:
            on_bad_frame(str(e))

        offset = 0
        seqs = {name: 0 for name in cameras}
        while not stop.is_set():
            last_t = None
            for cf in self.drive.frames(cameras=cameras, on_bad_frame=bad):
                if stop.is_set():
                    return
                last_t = cf.t_ns
                seq = seqs[cf.camera]
                seqs[cf.camera] = seq + 1
                yield CapturedFrame(cf.camera, cf.t_ns + offset, cf.frame, seq)
            if not self.loop or last_t is None:
                return
            offset += last_t - (self.drive.start_ns or 0) + LOOP_GAP_NS

    def close(self) -> None:
        super().close()
        self.drive.close()


def _paced(frames: Iterator[CapturedFrame], stop: threading.Event) -> Iterator[CapturedFrame]:
    """Release each frame at its recorded time relative to the first one (monotonic clock)."""
    start_wall: float | None = None
    for frame in frames:
        if start_wall is None:
            start_wall = time.monotonic() - frame.t_ns / 1e9
        delay = start_wall + frame.t_ns / 1e9 - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        yield frame
