"""One thread per push source: read frames, stamp them, feed latest-frame slots."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator

from perception.errors import PerceptionError
from perception.sources.slot import CapturedFrame, LatestFrameSlot

log = logging.getLogger(__name__)


class SourceThread:
    """Drains `produce()` (an iterator of frames) into per-camera slots until it ends or `stop()`.

    `backpressure=True` waits for the node to take a frame before putting the next one (no drops:
    the `fast` pacing of recorded drives); otherwise the newest frame replaces an untaken one.
    Errors from the source are counted and logged; the thread ends, the slots are closed.
    """

    def __init__(self, name: str, produce: Callable[[threading.Event], Iterator[CapturedFrame]],
                 slots: dict[str, LatestFrameSlot], backpressure: bool = False) -> None:
        self.name = name
        self.slots = slots
        self.errors = 0
        self.last_error: str | None = None
        self._produce = produce
        self._backpressure = backpressure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, join_timeout_s: float = 2.0) -> None:
        self._stop.set()
        for slot in self.slots.values():
            slot.close()
        self._thread.join(join_timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            for frame in self._produce(self._stop):
                if self._stop.is_set():
                    break
                slot = self.slots.get(frame.camera)
                if slot is None:
                    continue
                if self._backpressure:
                    while not slot.wait_empty(0.1) and not self._stop.is_set():
                        pass
                slot.put(dataclasses.replace(frame, arrival_ns=time.monotonic_ns()))
        except PerceptionError as e:
            self.errors += 1
            self.last_error = str(e)
            log.error("source %s: %s", self.name, e)
        finally:
            for slot in self.slots.values():
                slot.close()
