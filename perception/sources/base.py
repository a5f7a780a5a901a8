"""What the node reads frame sets from: the `Source` protocol, and the push machinery live sources share.

    for arrival in source.arrivals(sync_config, on_bad_frame, stop):   # Arrival, or None: nothing came
        ...                                                             # within the poll period
    source.close()

Implementations: `DriveSource` (a recorded drive, lockstep / fast / realtime, optionally looped;
perception/sources/recorded.py), `CameraSource` and `FrameBusSource` (perception/sources/live.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from calib.rig import Rig
from perception.sources.slot import CapturedFrame, LatestFrameSlot
from perception.sources.sync import FrameSet, LiveSynchronizer, SyncConfig
from perception.sources.threads import SourceThread

POLL_S = 0.1  # a push source yields None after this long without a frame set

BadFrame = Callable[[str], None]  # told why a frame was skipped; counts it


@dataclass(frozen=True)
class Arrival:
    frame_set: FrameSet
    arrival_ns: int      # CLOCK_MONOTONIC when the anchor frame arrived: latency diagnostics only
    captured_total: int  # frames the source delivered so far, for the drop ratio


class Source(Protocol):
    rig: Rig  # the calibration of the cameras the frames come from

    def arrivals(self, sync: SyncConfig, on_bad_frame: BadFrame, stop: threading.Event) -> Iterator[Arrival | None]:
        """Frame sets of `sync.cameras` until the source ends or `stop` is set; None when no frame set came
        within POLL_S (the node reports its health meanwhile)."""

    def close(self) -> None:
        """Stop producing and release the devices / files / sockets (idempotent)."""


Producer = Callable[[threading.Event], Iterator[CapturedFrame]]


class PushSource:
    """A source whose producers run in threads, each filling the latest-frame slots of its cameras
    (newest wins, drops counted); frame sets are assembled by `LiveSynchronizer`."""

    backpressure = False  # True: a producer waits until its frame was taken (nothing dropped)

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self._threads: list[SourceThread] = []

    def producers(self, cameras: tuple[str, ...], on_bad_frame: BadFrame) -> list[tuple[str, Producer, tuple[str, ...]]]:
        """(thread name, frame producer, cameras it fills) for each thread to start."""
        raise NotImplementedError

    def arrivals(self, sync: SyncConfig, on_bad_frame: BadFrame, stop: threading.Event) -> Iterator[Arrival | None]:
        slots = {name: LatestFrameSlot() for name in sync.cameras}
        for name, produce, cameras in self.producers(sync.cameras, on_bad_frame):
            thread = SourceThread(name, produce, {c: slots[c] for c in cameras}, backpressure=self.backpressure)
            self._threads.append(thread)
            thread.start()
        live = LiveSynchronizer(sync, slots)
        while not stop.is_set():
            frame_set = live.next_set(timeout_s=POLL_S)
            if frame_set is None:
                if all(not t.alive for t in self._threads) and not any(s.wait(0) for s in slots.values()):
                    return  # every producer ended (a finished drive or video file)
                yield None
                continue
            yield Arrival(frame_set, frame_set.frames[frame_set.anchor].arrival_ns,
                          sum(s.received for s in slots.values()))

    def close(self) -> None:
        for thread in self._threads:
            thread.stop()
        self._threads.clear()
