"""The node core: one object owns every stage and its buffers; `step` runs one frame set top to bottom.

    sync -> preprocess -> engine (temporal state) -> decode -> track (+ range / velocity / TTC) -> hints

No sockets, threads or wall-time decisions here (perception/node/process.py wraps it); the outputs are a
pure function of the frame sets and the configuration. Wall time only fills the stage timings.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from calib.remap import build_remap
from calib.rig import Rig
from perception.decode.centernet import DecodeConfig, Decoder
from perception.detections import Detections
from perception.engine.base import Engine
from perception.errors import ConfigError
from perception.frame import Frame
from perception.messaging.schemas import DetectionsMessage, HealthMessage, HintsMessage
from perception.node import fill
from perception.node.config import NodeConfig
from perception.node.health import HealthMonitor
from perception.preprocess import FastPreprocessor, Normalization
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


class Node:
    def __init__(self, rig: Rig, config: NodeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.rig = rig
        self.cameras: tuple[str, ...] = tuple(rig.names)
        self.anchor = config.anchor or self.cameras[0]
        if self.anchor not in self.cameras:
            raise ConfigError(f"sync.anchor: {self.anchor!r} is not a camera of the rig {list(self.cameras)}")
        contract = engine.contract
        self.contract = contract
        self.camera_models = [rig[name] for name in self.cameras]
        self.tables = [build_remap(cam, contract.input_width, contract.input_height, "letterbox")
                       for cam in self.camera_models]
        self.preprocessor = make_preprocessor(config.preprocess, self.tables,
                                              Normalization(contract.mean, contract.std))
        # TensorRT reads the CUDA kernel's output buffer in place; every other pairing goes through the host
        self._device_images = (hasattr(self.preprocessor, "enqueue")
                               and getattr(engine, "reads_device_images", False))
        self.decoder = Decoder(contract, self.tables, DecodeConfig.for_classes(
            contract.classes, config.decode.score_threshold, nms_iou=config.decode.nms_iou))
        self.tracker = MultiCameraTracker(self.camera_models, config.tracker, config.ranging)
        self.hints = HintGenerator(config.hints)
        self.health = HealthMonitor(self.cameras, self.anchor, config.health)
        self.state = engine.initial_state(len(self.cameras))
        self.capture_ns = np.full(len(self.cameras), -1, np.int64)
        self.dropped = np.zeros(len(self.cameras), np.int64)
        self.publish_drops = 0
        # what a stale camera's batch slot holds: its last good frame (ignored by the engine: fresh = False)
        self._last_frames: list[Frame] = [
            Frame.from_bgr(np.zeros((cam.height, cam.width, 3), np.uint8)) for cam in self.camera_models]

    def step(self, frame_set: FrameSet, captured_total: int, arrival_ns: int | None = None) -> NodeOutputs:
        """One frame set. `captured_total`: frames the sources delivered so far (for the drop ratio);
        `arrival_ns`: monotonic time the anchor frame arrived (latency diagnostics only)."""
        timer = _StageTimer()
        fresh = self._accept_frames(frame_set)
        t_ns = np.where(fresh, self.capture_ns, frame_set.t_ns).astype(np.int64)

        with timer("preprocess"):
            images = (self.preprocessor.enqueue(self._last_frames) if self._device_images
                      else self.preprocessor.run(self._last_frames))
        engine_ok = True
        with timer("engine"):
            try:
                heads, self.state = self.engine.run(images, t_ns, self.state, fresh)
            except Exception as e:  # noqa: BLE001 - an engine failure is reported in health, the loop goes on
                log.error("engine %s failed on frame set %d: %s", self.engine.name, frame_set.seq, e)
                engine_ok = False
                self.state = self.engine.initial_state(len(self.cameras))
        with timer("decode"):
            detections = self.decoder(heads, fresh) if engine_ok else Detections.empty()
        with timer("track"):
            camera_t = {n: int(self.capture_ns[n]) for n in np.flatnonzero(fresh)}
            objects = self.tracker.update(frame_set.t_ns, camera_t, detections)
        with timer("hints"):
            hints = self.hints.update(objects)

        latency_ms = (time.monotonic_ns() - arrival_ns) / 1e6 if arrival_ns is not None else float("nan")
        health_due = self.health.on_frame_set(frame_set.t_ns, [self.cameras[n] for n in np.flatnonzero(~fresh)],
                                              int(self.dropped.sum()), captured_total, latency_ms, engine_ok)
        diag = fill.diagnostics(self.contract.model_id, self.cameras, self.capture_ns, self.dropped, timer.ns)
        return NodeOutputs(
            fill.detections_message(diag, frame_set.t_ns, fresh, self.contract.classes, objects),
            fill.hints_message(diag, hints),
            self.health_message(diag) if health_due else None,
            timer.ns,
        )

    def health_message(self, diag=None, no_frames_for_s: float | None = None) -> HealthMessage:
        if diag is None:
            diag = fill.diagnostics(self.contract.model_id, self.cameras, self.capture_ns, self.dropped, {})
        return fill.health_message(diag, self.health.report(no_frames_for_s), self.publish_drops)

    def _accept_frames(self, frame_set: FrameSet) -> np.ndarray:
        """Take each camera's frame into its batch slot; a missing or malformed frame leaves the camera
        stale (malformed ones are counted). Returns `fresh` [N] bool."""
        fresh = np.zeros(len(self.cameras), bool)
        for n, name in enumerate(self.cameras):
            if name in frame_set.dropped:
                self.dropped[n] = frame_set.dropped[name]
            captured = frame_set.frames.get(name)
            if captured is None:
                continue
            cam = self.camera_models[n]
            if (captured.frame.width, captured.frame.height) != (cam.width, cam.height):
                self.health.bad_frames += 1
                log.warning("camera %s: frame of %dx%d does not match its calibration %dx%d; skipped", name,
                            captured.frame.width, captured.frame.height, cam.width, cam.height)
                continue
            if captured.t_ns <= self.capture_ns[n]:
                self.health.bad_frames += 1
                log.warning("camera %s: capture time %d not after the previous %d; skipped", name,
                            captured.t_ns, self.capture_ns[n])
                continue
            self._last_frames[n] = captured.frame
            self.capture_ns[n] = captured.t_ns
            fresh[n] = True
        return fresh


def make_preprocessor(kind: str, tables: list, norm: Normalization):
    """`cuda` when a GPU backend is usable, else the CPU fast path (with a warning)."""
    if kind == "cuda":
        from kernels.launcher import CudaPreprocessor, available_backend

        if available_backend() is not None:
            return CudaPreprocessor(tables, norm, np.float32)
        log.warning("preprocess: cuda needs an NVIDIA GPU with pycuda or CuPy; using the CPU fast path")
    return FastPreprocessor(tables, norm, np.float32)


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
