"""The node process: runs what perception/node/assembly.py built (source, node, sinks) until the source ends.

    with NodeProcess(config) as process:      # opens the source, the model and the sinks
        process.attach(extra_sink)            # optional: more sinks (a run recorder, a live viewer)
        summary = process.run()               # until the source ends, `max_frame_sets`, or stop()

The loop takes each frame set through the node's stages prepare -> infer -> finish + sinks, one after
another or pipelined on three threads (perception/node/pipeline.py; config `pipeline`).

Pacing of recorded drives (lockstep / fast / realtime) is the source's: perception/sources/recorded.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from perception.engine.base import Engine
from perception.errors import SourceError
from perception.messaging.schemas import HealthMessage
from perception.node.assembly import assemble
from perception.node.config import NodeConfig
from perception.node.node import Counters, Inferred, NodeOutputs, Prepared
from perception.node.pipeline import pipelined, sequential
from perception.node.sinks import Sink
from perception.sources.base import Arrival
from perception.sources.sync import SyncConfig

NO_FRAMES_HEALTH_S = 0.5  # wall-time period of health messages while no frame set arrives


@dataclass
class RunSummary:
    frame_sets: int = 0
    objects: int = 0
    bad_frames: int = 0
    dropped: int = 0
    engine_ms: list[float] = dataclasses.field(default_factory=list)
    latency_ms: list[float] = dataclasses.field(default_factory=list)


class StopSignals:
    """The process's SIGINT / SIGTERM policy, in one place. Entered before the node is built: a signal during
    start-up interrupts it (KeyboardInterrupt, so what is open so far is closed on the way out: no half-written
    recording); after `watch(process)` a signal ends that process's loop cleanly (sockets closed, threads joined
    by close()). `received` holds the last signal; leaving restores the previous handlers."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._process: NodeProcess | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def watch(self, process: "NodeProcess") -> None:
        self._process = process

    def _handle(self, sig: int, _frame: object) -> None:
        self.received = signal.Signals(sig)
        if self._process is None:
            raise KeyboardInterrupt
        self._process.stop()


class NodeProcess:
    def __init__(self, config: NodeConfig, engine: Engine | None = None) -> None:
        self.config = config
        self._stop = threading.Event()
        self._ran = False
        self._assembly = assemble(config, engine)
        self.source = self._assembly.source
        self.node = self._assembly.node
        self.engine = self.node.engine
        self.sinks = self._assembly.sinks
        self.sync_config = SyncConfig(self.node.cameras, self.node.anchor, config.sync.max_skew_ms,
                                      anchor_lost_s=config.health.lost_after_s)

    def attach(self, sink: Sink) -> None:
        """One more sink, written after the configured ones (and closed with them)."""
        self.sinks.append(sink)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._assembly.close()

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self, max_frame_sets: int | None = None,
            status: Callable[[RunSummary, NodeOutputs], None] | None = None) -> RunSummary:
        """Until the source ends, `max_frame_sets` frame sets or stop(); the node's three stages one after
        another, or pipelined on three threads (config `pipeline`; the same outputs)."""
        if self._ran:
            raise RuntimeError("NodeProcess.run() runs once: the sources and the temporal state are consumed")
        self._ran = True
        summary = RunSummary()
        stages = [("prepare", self._prepare), ("engine", self._infer)]
        items = self._intake(max_frame_sets)
        if self._assembly.pipelined:
            results = pipelined(items, stages, buffers=len(self.node.batch_stages))
        else:
            results = sequential(items, stages)
        with contextlib.closing(results):
            for item in results:
                self._deliver(item, summary, status)
        summary.bad_frames = self.node.stats.bad_frames
        summary.dropped = self.node.stats.dropped
        if summary.frame_sets == 0 and not self._stop.is_set() and max_frame_sets != 0:
            health = self.node.health_message(self.node.counters(), no_frames_for_s=0.0)
            raise SourceError(f"the source ended without a frame set: {_camera_report(health)}")
        return summary

    def _intake(self, max_frame_sets: int | None) -> Iterator[Arrival | _Idle]:
        """The source's frame sets, and an `_Idle` every NO_FRAMES_HEALTH_S of wall time while none comes."""
        arrived = 0
        silent_since = time.monotonic()
        next_health = silent_since + NO_FRAMES_HEALTH_S
        if max_frame_sets == 0:
            return
        for arrival in self.source.arrivals(self.sync_config, self.node.stats.bad_frame, self._stop):
            if self._stop.is_set():
                return
            if arrival is None:  # no frame set within the source's poll period
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + NO_FRAMES_HEALTH_S
                    yield _Idle(now - silent_since, arrived)
                continue
            silent_since = time.monotonic()
            next_health = silent_since + NO_FRAMES_HEALTH_S
            yield arrival
            arrived += 1
            if max_frame_sets is not None and arrived >= max_frame_sets:
                return

    def _prepare(self, item: Arrival | _Idle) -> Prepared | _Idle:
        if isinstance(item, _Idle):
            return dataclasses.replace(item, counters=self.node.counters())
        return self.node.prepare(item.frame_set, item.captured_total, item.arrival_ns)

    def _infer(self, item: Prepared | _Idle) -> Inferred | _Idle:
        return item if isinstance(item, _Idle) else self.node.infer(item)

    def _deliver(self, item: Inferred | _Idle, summary: RunSummary,
                 status: Callable[[RunSummary, NodeOutputs], None] | None) -> None:
        """Finish a frame set and write it to the sinks (or send health while idle, and give up on a source
        that stays silent too long)."""
        if isinstance(item, _Idle):
            assert item.counters is not None
            health = self.node.health_message(item.counters, no_frames_for_s=item.silent_s)
            for sink in self.sinks:
                sink.idle(health)
            timeout = self.config.source.first_frame_timeout_s
            if item.frame_sets == 0 and timeout > 0 and item.silent_s >= timeout:
                raise SourceError(f"no frame set within {timeout:g} s of starting "
                                  f"(source.first_frame_timeout_s): {_camera_report(health)}")
            exit_after = self.config.health.exit_after_s
            if item.frame_sets > 0 and exit_after > 0 and item.silent_s >= exit_after:
                raise SourceError(f"no frame set for {item.silent_s:.1f} s "
                                  f"(health.exit_after_s): {_camera_report(health)}")
            return
        outputs = self.node.finish(item)
        for sink in self.sinks:
            sink.write(outputs)
        self.node.stats.set_publish_drops(sum(sink.drops for sink in self.sinks))
        summary.frame_sets += 1
        summary.objects += len(outputs.detections.objects)
        summary.engine_ms.append(outputs.stage_ns.get("engine", 0) / 1e6)
        arrival_ns = item.prepared.arrival_ns
        summary.latency_ms.append((time.monotonic_ns() - arrival_ns) / 1e6 if arrival_ns is not None
                                  else float("nan"))
        if status is not None:
            status(summary, outputs)


@dataclass(frozen=True)
class _Idle:
    """No frame set for `silent_s` of wall time after `frame_sets` of them; `counters` filled by prepare."""

    silent_s: float
    frame_sets: int
    counters: Counters | None = None


def _camera_report(health: HealthMessage) -> str:
    """Which cameras failed, as health says (with its reasons)."""
    states = ", ".join(f"{c} {s}" for c, s in zip(health.diag.cameras, health.camera_states))
    return f"cameras {states}" + (f" ({'; '.join(health.reasons)})" if health.reasons else "")
