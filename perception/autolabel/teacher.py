"""Teachers: any model the node can run, one camera frame in, `Detections` in that camera's pixels out.

A teacher sees each camera's frames in capture-time order. The temporal model (perception/contract.py)
keeps one engine state per camera (a batch of one), so cameras never share history.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from calib.camera import CameraModel
from calib.remap import build_remap
from perception.decode.centernet import DecodeConfig, Decoder
from perception.detections import Detections
from perception.engine.base import Engine, EngineState
from perception.frame import Frame
from perception.preprocess import FastPreprocessor, Normalization


class Teacher(Protocol):
    teacher_id: str             # the model id written into every label
    classes: tuple[str, ...]    # Detections.cls indexes these (the project's classes)

    def detect(self, camera: int, t_ns: int, frame: Frame) -> Detections:
        """Detections of one frame of camera `camera` (index into the cameras given at construction)."""
        ...


class TemporalTeacher:
    """The project's temporal CNN (`engine`) decoded with `score_threshold` for every class."""

    def __init__(self, engine: Engine, cameras: Sequence[CameraModel], score_threshold: float) -> None:
        contract = engine.contract
        self.engine = engine
        self.teacher_id = contract.model_id
        self.classes = tuple(contract.classes)
        norm = Normalization(contract.mean, contract.std)
        tables = [build_remap(cam, contract.input_width, contract.input_height, "letterbox") for cam in cameras]
        self._preprocessors = [FastPreprocessor([t], norm, np.float32) for t in tables]
        config = DecodeConfig.for_classes(contract.classes, score_threshold)
        self._decoders = [Decoder(contract, [t], config) for t in tables]
        self._states: list[EngineState] = [engine.initial_state(1) for _ in cameras]

    def detect(self, camera: int, t_ns: int, frame: Frame) -> Detections:
        images = self._preprocessors[camera].run([frame])
        heads, self._states[camera] = self.engine.run(images, np.array([t_ns], np.int64), self._states[camera])
        dets = self._decoders[camera](heads)
        dets.camera[:] = camera
        return dets


def open_teacher(path: str | Path, cameras: Sequence[CameraModel], score_threshold: float,
                 threads: int | None = None) -> Teacher:
    """The teacher in a model file: the temporal CNN with its contract (ONNX Runtime)."""
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    return TemporalTeacher(OnnxRuntimeEngine(path, threads=threads), cameras, score_threshold)
