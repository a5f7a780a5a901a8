"""The node core: one object owns every stage and its buffers; `step` runs one frame set top to bottom.

    sync -> preprocess -> engine (temporal state) -> decode -> track (+ range / velocity / TTC) -> hints

`step` is three stage methods in order, which the pipelined loop (perception/node/pipeline.py) runs on
three threads, one frame set each:

    prepare(frame_set)  accept the frames, preprocess     owns _last_frames, capture_ns, the drop counters
    infer(prepared)     the engine                        owns the temporal state
    finish(inferred)    decode, track, hints, messages    owns the tracker, hints and health

What a later stage needs of an earlier stage's state travels in the item, copied (`Counters`). No
sockets or wall-time decisions here (perception/node/process.py wraps it; the node is built by
perception/node/assembly.py); the outputs are a pure function of the frame sets and the configuration.
Wall time only fills the stage timings. The node's counters (bad frames, dropped frames, publish drops)
are read and counted through `node.stats`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from calib.camera import CameraModel
from calib.remap import RemapTable, build_remap
from calib.rig import Rig
from perception.decode import DecodeConfig, make_decoder
from perception.detections import Detections
from perception.contract import ModelContract
from perception.model_card import ModelCard
from perception.engine.base import DeviceBatch, Heads
from perception.engine.stages import Stages
from perception.errors import ConfigError
from perception.frame import Frame
from perception.messaging.schemas import DetectionsMessage, HealthMessage, HintsMessage, Message
from perception.node import fill
from perception.node.config import NodeConfig
from perception.node.health import HealthMonitor
from perception.hints.hints import HintGenerator
from perception.sources.sync import FrameSet
from perception.track.tracker import MultiCameraTracker

log = logging.getLogger(__name__)

STAGES = ("preprocess", "engine", "decode", "track", "hints")


@dataclass
class NodeOutputs:
    detections: DetectionsMessage
    hints: HintsMessage
    health: HealthMessage | None  # at the health rate only
    stage_ns: dict[str, int]
    frame_set: FrameSet | None = None  # the inputs, for sinks that show the images (Foxglove live view)

    def messages(self) -> list[Message]:
        """The messages to publish / record, in order: detections, hints, health when due."""
        return [self.detections, self.hints] + ([self.health] if self.health is not None else [])


@dataclass(frozen=True)
class Counters:
    """The prepare stage's bookkeeping as it was when a frame set was accepted (copies: the prepare stage
    goes on with the next frame set while this one is finished)."""

    capture_ns: np.ndarray          # [N] each camera's newest accepted capture time (-1: none yet)
    dropped_per_camera: np.ndarray  # [N] frames the sources dropped so far
    bad_frames: int


@dataclass
class Prepared:
    """One frame set after `Node.prepare`: its fresh cameras and the preprocessed batch."""

    frame_set: FrameSet
    captured_total: int
    arrival_ns: int | None
    fresh: np.ndarray       # [N] bool
    t_ns: np.ndarray        # [N] capture times for the engine (stale cameras: the frame set's time)
    batch: np.ndarray | DeviceBatch
    stages: Stages          # the pair whose batch buffer holds it
    counters: Counters
    stage_ns: dict[str, int]


@dataclass
class Inferred:
    """One frame set after `Node.infer`: the network's heads, or None when the engine failed."""

    prepared: Prepared
    heads: Heads | None
    stage_ns: dict[str, int]


class NodeStats:
    """The node's counters. Frames skipped as malformed are counted by the node and by its source (from the
    source's thread: hence the lock); frames the sources dropped come with each frame set; messages the
    sinks could not deliver are reported by the process after each write."""

    def __init__(self, num_cameras: int) -> None:
        self._lock = threading.Lock()
        self._bad_frames = 0
        self.dropped_per_camera = np.zeros(num_cameras, np.int64)
        self._publish_drops = 0

    def bad_frame(self, reason: str) -> None:
        """One frame skipped as malformed (logged with `reason`)."""
        log.warning("%s", reason)
        with self._lock:
            self._bad_frames += 1

    def set_publish_drops(self, total: int) -> None:
        """Messages the sinks could not deliver since start (their running total)."""
        self._publish_drops = int(total)

    @property
    def bad_frames(self) -> int:
        return self._bad_frames

    @property
    def dropped(self) -> int:
        return int(self.dropped_per_camera.sum())

    @property
    def publish_drops(self) -> int:
        return self._publish_drops


def remap_tables(camera_models: list[CameraModel], contract: ModelContract | ModelCard) -> list[RemapTable]:
    """Each camera's letterbox remap into the network input (centred, or as the model card says)."""
    return [build_remap(cam, contract.input_width, contract.input_height, "letterbox", contract.letterbox)
            for cam in camera_models]


class Node:
    """`stages`: preprocessor + engine pairs over one engine, one per batch buffer (the pipelined loop
    preprocesses the next frame set while the engine reads this one: two); `tables`: the remap tables they
    preprocess with (`remap_tables(...)` of the rig's cameras in order)."""

    def __init__(self, rig: Rig, config: NodeConfig, stages: Sequence[Stages], tables: list[RemapTable]) -> None:
        if not stages or any(pair.engine is not stages[0].engine for pair in stages):
            raise ValueError("Node: one or more preprocessor + engine pairs over one engine")
        self.config = config
        self.batch_stages = tuple(stages)
        self.engine = stages[0].engine
        self.rig = rig
        self.cameras: tuple[str, ...] = tuple(rig.names)
        self.anchor = config.sync.anchor or self.cameras[0]
        if self.anchor not in self.cameras:
            raise ConfigError(f"sync.anchor: {self.anchor!r} is not a camera of the rig {list(self.cameras)}")
        contract = self.engine.contract
        self.contract = contract
        self.camera_models = [rig[name] for name in self.cameras]
        self.tables = tables
        self.decoder = make_decoder(contract, self.tables, DecodeConfig.for_classes(
            contract.classes, config.decode.score_threshold, nms_iou=config.decode.nms_iou))
        self.tracker = MultiCameraTracker(self.camera_models, config.tracker, config.ranging)
        self.hints = HintGenerator(config.hints)
        self.health = HealthMonitor(self.cameras, self.anchor, config.health)
        self.stats = NodeStats(len(self.cameras))
        self.state = self.engine.initial_state(len(self.cameras))
        self.capture_ns = np.full(len(self.cameras), -1, np.int64)
        # what a stale camera's batch slot holds: its last good frame (ignored by the engine: fresh = False)
        self._last_frames: list[Frame] = [
            Frame.from_bgr(np.zeros((cam.height, cam.width, 3), np.uint8)) for cam in self.camera_models]
        self._prepared = 0

    def step(self, frame_set: FrameSet, captured_total: int, arrival_ns: int | None = None) -> NodeOutputs:
        """One frame set. `captured_total`: frames the sources delivered so far (for the drop ratio);
        `arrival_ns`: monotonic time the anchor frame arrived (latency diagnostics only)."""
        return self.finish(self.infer(self.prepare(frame_set, captured_total, arrival_ns)))

    def prepare(self, frame_set: FrameSet, captured_total: int, arrival_ns: int | None = None) -> Prepared:
        """Accept the frame set's frames and preprocess the batch, into the next batch buffer in turn: it
        stays valid until that buffer comes round again (`len(batch_stages)` frame sets later)."""
        timer = _StageTimer()
        fresh = self._accept_frames(frame_set)
        t_ns = np.where(fresh, self.capture_ns, frame_set.t_ns).astype(np.int64)
        stages = self.batch_stages[self._prepared % len(self.batch_stages)]
        self._prepared += 1
        with timer("preprocess"):
            batch = stages.preprocess(self._last_frames)
        return Prepared(frame_set, captured_total, arrival_ns, fresh, t_ns, batch, stages, self.counters(),
                        timer.ns)

    def infer(self, prepared: Prepared) -> Inferred:
        """The engine on the prepared batch; a failure is logged, resets the temporal state and is reported
        in health (heads None), and the loop goes on."""
        timer = _StageTimer()
        heads = None
        with timer("engine"):
            try:
                heads, self.state = prepared.stages.infer(prepared.batch, prepared.t_ns, self.state, prepared.fresh)
            except Exception as e:  # noqa: BLE001 - an engine failure is reported in health, the loop goes on
                log.error("engine %s failed on frame set %d: %s", self.engine.name, prepared.frame_set.seq, e)
                self.state = self.engine.initial_state(len(self.cameras))
        return Inferred(prepared, heads, timer.ns)

    def finish(self, inferred: Inferred) -> NodeOutputs:
        """Decode, track, hints, health; the messages filled."""
        prepared, counters, frame_set = inferred.prepared, inferred.prepared.counters, inferred.prepared.frame_set
        fresh = prepared.fresh
        timer = _StageTimer()
        timer.ns.update(prepared.stage_ns)
        timer.ns.update(inferred.stage_ns)
        engine_ok = inferred.heads is not None
        with timer("decode"):
            detections = self.decoder(inferred.heads, fresh) if engine_ok else Detections.empty()
        with timer("track"):
            camera_t = {n: int(counters.capture_ns[n]) for n in np.flatnonzero(fresh)}
            objects = self.tracker.update(frame_set.t_ns, camera_t, detections)
        with timer("hints"):
            hints = self.hints.update(objects)

        arrival_ns = prepared.arrival_ns
        latency_ms = (time.monotonic_ns() - arrival_ns) / 1e6 if arrival_ns is not None else float("nan")
        self.health.bad_frames = counters.bad_frames
        health_due = self.health.on_frame_set(frame_set.t_ns, [self.cameras[n] for n in np.flatnonzero(~fresh)],
                                              int(counters.dropped_per_camera.sum()), prepared.captured_total,
                                              latency_ms, engine_ok)
        diag = fill.diagnostics(self.contract.model_id, self.cameras, counters.capture_ns,
                                counters.dropped_per_camera, timer.ns)
        return NodeOutputs(
            fill.detections_message(diag, frame_set.t_ns, fresh, self.contract.classes, objects),
            fill.hints_message(diag, hints),
            self.health_message(counters, diag) if health_due else None,
            timer.ns,
            frame_set,
        )

    def counters(self) -> Counters:
        """A copy of the prepare stage's bookkeeping now."""
        return Counters(self.capture_ns.copy(), self.stats.dropped_per_camera.copy(), self.stats.bad_frames)

    def health_message(self, counters: Counters, diag=None, no_frames_for_s: float | None = None) -> HealthMessage:
        """Health as of `counters` (`diag`: the frame set's diagnostics; None: no frame set, as when idle)."""
        if diag is None:
            diag = fill.diagnostics(self.contract.model_id, self.cameras, counters.capture_ns,
                                    counters.dropped_per_camera, {})
        self.health.bad_frames = counters.bad_frames
        return fill.health_message(diag, self.health.report(no_frames_for_s), self.stats.publish_drops)

    def _accept_frames(self, frame_set: FrameSet) -> np.ndarray:
        """Take each camera's frame into its batch slot; a missing or malformed frame leaves the camera
        stale (malformed ones are counted). Returns `fresh` [N] bool."""
        fresh = np.zeros(len(self.cameras), bool)
        for n, name in enumerate(self.cameras):
            if name in frame_set.dropped:
                self.stats.dropped_per_camera[n] = frame_set.dropped[name]
            captured = frame_set.frames.get(name)
            if captured is None:
                continue
            cam = self.camera_models[n]
            if (captured.frame.width, captured.frame.height) != (cam.width, cam.height):
                self.stats.bad_frame(f"camera {name}: frame of {captured.frame.width}x{captured.frame.height} "
                                     f"does not match its calibration {cam.width}x{cam.height}; skipped")
                continue
            if captured.t_ns <= self.capture_ns[n]:
                self.stats.bad_frame(f"camera {name}: capture time {captured.t_ns} not after the previous "
                                     f"{self.capture_ns[n]}; skipped")
                continue
            self._last_frames[n] = captured.frame
            self.capture_ns[n] = captured.t_ns
            fresh[n] = True
        return fresh


class _StageTimer:
    def __init__(self) -> None:
        self.ns: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            self.ns[stage] = time.perf_counter_ns() - start
