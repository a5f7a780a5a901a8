"""Teachers: any model the node can run, one camera frame in, `Detections` in that camera's pixels out.

A teacher sees each camera's frames in capture-time order, one camera per engine run (a batch of one:
the temporal model keeps one state per camera, so cameras never share history; YOLOX exports take one
image anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from calib.camera import CameraModel
from perception.decode import DecodeConfig, make_decoder
from perception.detections import Detections
from perception.engine.base import Engine, EngineState
from perception.frame import Frame
from perception.node.node import remap_tables
from perception.preprocess import FastPreprocessor


class Teacher(Protocol):
    teacher_id: str             # the model id written into every label
    classes: tuple[str, ...]    # Detections.cls indexes these (the project's classes)

    def detect(self, camera: int, t_ns: int, frame: Frame) -> Detections:
        """Detections of one frame of camera `camera` (index into the cameras given at construction)."""
        ...


class ModelTeacher:
    """A model the node runs (perception.engine.onnxruntime.open_detector): the temporal CNN with its
    contract, or a plug-in detector with its model card (YOLOX), decoded with `score_threshold` for every
    class. Preprocessing follows the contract / card: letterbox alignment, colour order, scale, mean / std,
    pad value (docs/preprocess.md)."""

    def __init__(self, engine: Engine, cameras: Sequence[CameraModel], score_threshold: float) -> None:
        contract = engine.contract
        self.engine = engine
        self.teacher_id = contract.model_id
        self.classes = tuple(contract.classes)
        tables = remap_tables(list(cameras), contract)
        self._preprocessors = [FastPreprocessor([t], contract.normalization, np.float32) for t in tables]
        config = DecodeConfig.for_classes(contract.classes, score_threshold)
        self._decoders = [make_decoder(contract, [t], config) for t in tables]
        self._states: list[EngineState] = [engine.initial_state(1) for _ in cameras]

    def detect(self, camera: int, t_ns: int, frame: Frame) -> Detections:
        images = self._preprocessors[camera].run([frame])
        outputs, self._states[camera] = self.engine.run(images, np.array([t_ns], np.int64), self._states[camera])
        dets = self._decoders[camera](outputs)
        dets.camera[:] = camera
        return dets


def open_teacher(path: str | Path, cameras: Sequence[CameraModel], score_threshold: float,
                 threads: int | None = None, card: str | Path | None = None) -> Teacher:
    """The teacher in a model file (ONNX Runtime): an exported temporal model, or a plug-in detector whose
    card lies next to it, in its metadata, or at `card`."""
    from perception.engine.onnxruntime import open_detector

    return ModelTeacher(open_detector(path, card=card, threads=threads), cameras, score_threshold)
