"""Running a chain of stages over a stream of items: one after another, or pipelined on one thread per stage.

    for result in pipelined(items, [("prepare", prepare), ("engine", infer)], buffers=2):
        finish(result)             # the last stage runs in the caller's thread

While the caller finishes item k-1, the second stage works on k and the first on k+1 (the first stage's
thread also iterates `items`, taking the next one only when there is room for it). Results come in the
order of the items, as `sequential` gives them.
Each link between two stages is a queue of depth 1 and holds at most `buffers` items, counting the one
its consumer is working on: a stage that reuses an output buffer every `buffers` items (the node's batch
buffers) never overwrites one that is still being read.

Shutdown: when the items end, when the caller stops iterating (break, an exception, `close()`) or when a
stage raises, every stage thread stops at its next wait (within POLL_S) and is joined before the
generator returns; a stage's exception is then re-raised in the caller, with a note naming the stage.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

POLL_S = 0.05  # how often a waiting stage thread looks at the halt flag

Stage = tuple[str, Callable[[Any], Any]]  # (name for errors and thread names, item -> item)

_END = object()


def sequential(items: Iterable[Any], stages: Sequence[Stage]) -> Iterator[Any]:
    """Each item through every stage in the caller's thread."""
    for item in items:
        for _, run in stages:
            item = run(item)
        yield item


def pipelined(items: Iterable[Any], stages: Sequence[Stage], buffers: int = 2) -> Iterator[Any]:
    """As `sequential`, each stage on its own thread (see the module's docstring)."""
    if not stages or buffers < 1:
        raise ValueError("pipelined: at least one stage and one buffer per link")
    return _Pipeline(stages, buffers).results(items)


class _Pipeline:
    def __init__(self, stages: Sequence[Stage], buffers: int) -> None:
        self.stages = list(stages)
        self.halt = threading.Event()
        self.links = [queue.Queue[Any](maxsize=1) for _ in self.stages]  # links[i]: stage i's outputs
        self.credits = [threading.Semaphore(buffers) for _ in self.stages]  # free places in links[i]
        self.failure: tuple[str, BaseException] | None = None
        self._lock = threading.Lock()

    def results(self, items: Iterable[Any]) -> Iterator[Any]:
        threads = [threading.Thread(target=self._first, args=(items,), name=f"node-{self.stages[0][0]}",
                                    daemon=True)]
        threads += [threading.Thread(target=self._middle, args=(i,), name=f"node-{self.stages[i][0]}", daemon=True)
                    for i in range(1, len(self.stages))]
        for thread in threads:
            thread.start()
        last = len(self.stages) - 1
        try:
            while (item := self._get(last)) is not _END:
                yield item
                self.credits[last].release()
        finally:
            self.halt.set()
            for thread in threads:
                thread.join()
        if self.failure is not None:
            name, error = self.failure
            error.add_note(f"raised in the {name!r} stage of the pipelined node loop")
            raise error

    # ---- the stage threads ------------------------------------------------------------------------------
    def _first(self, items: Iterable[Any]) -> None:
        name, run = self.stages[0]
        iterator = iter(items)
        try:
            # the next item is taken only once there is room for it: a live source meanwhile keeps its
            # newest frames instead of handing over ones that would wait here
            while self._acquire(0):
                item = next(iterator, _END)
                if item is _END or not self._put(0, run(item)):
                    break
            self._put(0, _END)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._fail(name, e)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's clean-up runs in the thread that iterated it

    def _middle(self, i: int) -> None:
        name, run = self.stages[i]
        try:
            while (item := self._get(i - 1)) is not _END:
                if not self._acquire(i):
                    return
                result = run(item)
                self.credits[i - 1].release()
                if not self._put(i, result):
                    return
            self._put(i, _END)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._fail(name, e)

    # ---- waits that give up when the pipeline halts -----------------------------------------------------
    def _fail(self, name: str, error: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = (name, error)
        self.halt.set()

    def _acquire(self, i: int) -> bool:
        while not self.halt.is_set():
            if self.credits[i].acquire(timeout=POLL_S):
                return True
        return False

    def _put(self, i: int, item: Any) -> bool:
        while not self.halt.is_set():
            try:
                self.links[i].put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, i: int) -> Any:
        while not self.halt.is_set():
            try:
                return self.links[i].get(timeout=POLL_S)
            except queue.Empty:
                continue
        return _END
