"""The node process: runs what perception/node/assembly.py built (source, node, sinks) until the source ends.

    with NodeProcess(config) as process:      # opens the source, the model and the sinks
        process.attach(extra_sink)            # optional: more sinks (a run recorder, a live viewer)
        summary = process.run()               # until the source ends, `max_frame_sets`, or stop()

Pacing of recorded drives (lockstep / fast / realtime) is the source's: perception/sources/recorded.py.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from perception.engine.base import Engine
from perception.errors import SourceError
from perception.messaging.schemas import HealthMessage
from perception.node.assembly import assemble
from perception.node.config import NodeConfig
from perception.node.node import NodeOutputs
from perception.node.sinks import Sink
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

    def install_signal_handlers(self) -> None:
        """SIGINT / SIGTERM end the loop cleanly (sockets closed, threads joined by close())."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop())

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self, max_frame_sets: int | None = None,
            status: Callable[[RunSummary, NodeOutputs], None] | None = None) -> RunSummary:
        if self._ran:
            raise RuntimeError("NodeProcess.run() runs once: the sources and the temporal state are consumed")
        self._ran = True
        summary = RunSummary()
        stats = self.node.stats
        silent_since = time.monotonic()
        next_health = silent_since + NO_FRAMES_HEALTH_S
        for arrival in self.source.arrivals(self.sync_config, stats.bad_frame, self._stop):
            if self._stop.is_set():
                break
            if arrival is None:  # no frame set within the source's poll period
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + NO_FRAMES_HEALTH_S
                    health = self.node.health_message(no_frames_for_s=now - silent_since)
                    for sink in self.sinks:
                        sink.idle(health)
                    timeout = self.config.source.first_frame_timeout_s
                    if summary.frame_sets == 0 and timeout > 0 and now - silent_since >= timeout:
                        raise SourceError(f"no frame set within {timeout:g} s of starting "
                                          f"(source.first_frame_timeout_s): {_camera_report(health)}")
                    exit_after = self.config.health.exit_after_s
                    if summary.frame_sets > 0 and exit_after > 0 and now - silent_since >= exit_after:
                        raise SourceError(f"no frame set for {now - silent_since:.1f} s "
                                          f"(health.exit_after_s): {_camera_report(health)}")
                continue
            silent_since = time.monotonic()
            next_health = silent_since + NO_FRAMES_HEALTH_S
            outputs = self.node.step(arrival.frame_set, arrival.captured_total, arrival.arrival_ns)
            for sink in self.sinks:
                sink.write(outputs)
            stats.set_publish_drops(sum(sink.drops for sink in self.sinks))
            summary.frame_sets += 1
            summary.objects += len(outputs.detections.objects)
            summary.engine_ms.append(outputs.stage_ns.get("engine", 0) / 1e6)
            summary.latency_ms.append((time.monotonic_ns() - arrival.arrival_ns) / 1e6)
            if status is not None:
                status(summary, outputs)
            if max_frame_sets is not None and summary.frame_sets >= max_frame_sets:
                break
        summary.bad_frames = stats.bad_frames
        summary.dropped = stats.dropped
        if summary.frame_sets == 0 and not self._stop.is_set() and max_frame_sets != 0:
            raise SourceError(f"the source ended without a frame set: "
                              f"{_camera_report(self.node.health_message(no_frames_for_s=0.0))}")
        return summary


def _camera_report(health: HealthMessage) -> str:
    """Which cameras failed, as health says (with its reasons)."""
    states = ", ".join(f"{c} {s}" for c, s in zip(health.diag.cameras, health.camera_states))
    return f"cameras {states}" + (f" ({'; '.join(health.reasons)})" if health.reasons else "")
