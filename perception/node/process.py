"""The node process: sources and sync, the Node core, the publisher and the recorder, wired together.

    with NodeProcess(config) as process:      # opens the model, the sources, binds the socket
        summary = process.run()               # until the drive ends, `max_frame_sets`, or stop()

Pacing of recorded drives: `lockstep` pulls every frame in order (deterministic; replay and regression),
`fast` pushes every frame through the live path as fast as the node takes them, `realtime` pushes them
at their recorded times and drops what the node cannot keep up with (as live cameras do).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from calib.rig import Rig, load_rig
from perception.engine.base import Engine
from perception.errors import ConfigError, DriveError
from perception.messaging.curve import CurveServerKeys
from perception.messaging.publisher import Publisher
from perception.node.config import NodeConfig
from perception.node.defaults import DEMO_MODEL
from perception.node.node import Node, NodeOutputs
from perception.sources.capture import capture_frames
from perception.sources.framebus import FrameBusReceiver
from perception.sources.slot import CapturedFrame, LatestFrameSlot
from perception.sources.sync import LiveSynchronizer, LockstepSynchronizer, SyncConfig
from perception.sources.threads import SourceThread

log = logging.getLogger(__name__)

NO_FRAMES_HEALTH_S = 0.5  # wall-time period of health messages while no frame set arrives


@dataclass
class RunSummary:
    frame_sets: int = 0
    objects: int = 0
    bad_frames: int = 0
    dropped: int = 0
    engine_ms: list[float] = dataclasses.field(default_factory=list)
    latency_ms: list[float] = dataclasses.field(default_factory=list)


def open_engine(config: NodeConfig) -> Engine:
    model = config.model or str(DEMO_MODEL)
    if config.engine.kind == "tensorrt":
        from perception.engine.tensorrt import TensorRTEngine

        return TensorRTEngine(model)
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    return OnnxRuntimeEngine(model, threads=config.engine.threads)


class NodeProcess:
    def __init__(self, config: NodeConfig, engine: Engine | None = None,
                 on_outputs: Callable[[NodeOutputs], None] | None = None) -> None:
        self.config = config
        self._stop = threading.Event()
        self._threads: list[SourceThread] = []
        self._drive = None
        self._receiver: FrameBusReceiver | None = None
        self._on_outputs = on_outputs
        self.publisher: Publisher | None = None
        self.recorder = None
        self._ran = False
        try:
            rig = self._open_source()
            self.engine = engine or open_engine(config)
            self.node = Node(rig, config, self.engine)
            self.sync_config = SyncConfig(self.node.cameras, self.node.anchor, config.sync.max_skew_ms)
            curve = None
            if config.publish.curve_secret_key is not None:
                curve = CurveServerKeys(Path(config.publish.curve_secret_key), Path(config.publish.curve_clients_dir))
            self.publisher = Publisher(config.publish.endpoint, sndhwm=config.publish.sndhwm, curve=curve)
            if config.record is not None:
                from perception.io.record import RunRecorder

                self.recorder = RunRecorder(config.record, rig, drive_path=self._drive_path)
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.stop()
        if self._drive is not None:
            self._drive.close()
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

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
        if self.config.source.kind == "drive" and self.config.source.pacing == "lockstep":
            frame_sets = self._lockstep_sets()
        else:
            frame_sets = self._live_sets()
        for frame_set, arrival_ns, captured_total in frame_sets:
            if self._stop.is_set():
                break
            outputs = self.node.step(frame_set, captured_total, arrival_ns)
            self._publish(outputs)
            summary.frame_sets += 1
            summary.objects += len(outputs.detections.objects)
            summary.engine_ms.append(outputs.stage_ns.get("engine", 0) / 1e6)
            if arrival_ns is not None:
                summary.latency_ms.append((time.monotonic_ns() - arrival_ns) / 1e6)
            if status is not None:
                status(summary, outputs)
            if max_frame_sets is not None and summary.frame_sets >= max_frame_sets:
                break
        summary.bad_frames = self.node.health.bad_frames
        summary.dropped = int(self.node.dropped.sum())
        return summary

    def _publish(self, outputs: NodeOutputs) -> None:
        messages = [outputs.detections, outputs.hints] + ([outputs.health] if outputs.health is not None else [])
        for message in messages:
            if not self.publisher.publish(message):
                self.node.publish_drops += 1
            if self.recorder is not None:
                self.recorder.write(message)
        if self._on_outputs is not None:
            self._on_outputs(outputs)

    def _lockstep_sets(self) -> Iterator:
        sync = LockstepSynchronizer(self.sync_config)
        counter = {"frames": 0}

        def counted() -> Iterator[CapturedFrame]:
            for frame in self._drive_frames(self._stop):
                counter["frames"] += 1
                yield frame

        for frame_set in sync.frame_sets(counted()):
            yield frame_set, time.monotonic_ns(), counter["frames"]

    def _live_sets(self) -> Iterator:
        slots = {name: LatestFrameSlot() for name in self.node.cameras}
        self._start_threads(slots)
        sync = LiveSynchronizer(self.sync_config, slots)
        silent_since = time.monotonic()
        next_health = silent_since + NO_FRAMES_HEALTH_S
        while not self._stop.is_set():
            frame_set = sync.next_set(timeout_s=0.1)
            if frame_set is None:
                if all(not t.alive for t in self._threads) and not any(s.wait(0) for s in slots.values()):
                    return  # every source ended (a finished drive or video file)
                now = time.monotonic()
                if now >= next_health:
                    next_health = now + NO_FRAMES_HEALTH_S
                    self.publisher.publish(self.node.health_message(no_frames_for_s=now - silent_since))
                continue
            silent_since = time.monotonic()
            next_health = silent_since + NO_FRAMES_HEALTH_S
            anchor = frame_set.frames[self.node.anchor]
            yield frame_set, anchor.arrival_ns, sum(s.received for s in slots.values())

    # ---- sources ------------------------------------------------------------------------------------
    def _open_source(self) -> Rig:
        src = self.config.source
        rig = load_rig(self.config.rig) if self.config.rig is not None else None
        self._drive_path = None
        if src.kind == "drive":
            from perception.io.drive import open_drive

            if src.drive is None:
                raise ConfigError("source.drive: a drive source needs a drive file (`perception run` fills in "
                                  "the demo drive when none is given)")
            self._drive_path = src.drive
            self._drive = open_drive(self._drive_path)
            return rig or self._drive.rig
        assert rig is not None  # config validation requires a rig for live sources
        if src.kind == "cameras":
            unknown = [name for name in src.cameras if name not in rig.names]
            if unknown:
                raise ConfigError(f"source.cameras: {unknown} are not cameras of the rig {list(rig.names)}")
        return rig

    def _start_threads(self, slots: dict[str, LatestFrameSlot]) -> None:
        src = self.config.source
        if src.kind == "drive":
            paced = src.pacing == "realtime"
            produce = (lambda stop: _paced(self._drive_frames(stop), stop)) if paced else self._drive_frames
            self._threads.append(SourceThread("drive", produce, slots, backpressure=not paced))
        elif src.kind == "cameras":
            for name, spec in src.cameras.items():
                self._threads.append(SourceThread(
                    name, lambda stop, name=name, spec=spec: capture_frames(name, spec, stop), {name: slots[name]}))
        else:
            self._receiver = FrameBusReceiver(src.endpoint, list(self.node.cameras))
            self._threads.append(SourceThread("framebus", self._receiver.frames, slots))
        for thread in self._threads:
            thread.start()

    def _drive_frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        """The drive's frames (looped when configured, with times shifted so they keep increasing);
        malformed frames are counted as bad frames and skipped."""
        def bad(e: DriveError) -> None:
            self.node.health.bad_frames += 1
            log.warning("%s", e)

        offset = 0
        seqs = {name: 0 for name in self.node.cameras}
        while not stop.is_set():
            last_t = None
            for cf in self._drive.frames(cameras=self.node.cameras, on_bad_frame=bad):
                if stop.is_set():
                    return
                last_t = cf.t_ns
                seq = seqs[cf.camera]
                seqs[cf.camera] = seq + 1
                yield CapturedFrame(cf.camera, cf.t_ns + offset, cf.frame, seq)
            if not self.config.source.loop or last_t is None:
                return
            offset += last_t - (self._drive.start_ns or 0) + int(1e8)


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
