"""Detections of one frame set: parallel arrays, one row per object, in original camera pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    camera: np.ndarray          # [N] int32, index into the rig's camera order
    cls: np.ndarray             # [N] int32, index into perception.labels.CLASSES
    score: np.ndarray           # [N] float32 in [0, 1]
    box: np.ndarray             # [N, 4] float32, x0 y0 x1 y1 in the camera's original pixels
    range_m: np.ndarray         # [N] float32, model's range head (m), NaN where unknown
    image_velocity: np.ndarray  # [N, 2] float32, box-centre displacement in original pixels per second

    def __len__(self) -> int:
        return int(self.camera.shape[0])

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32),
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 2), np.float32),
        )

    def select(self, index: np.ndarray) -> "Detections":
        return Detections(self.camera[index], self.cls[index], self.score[index], self.box[index],
                          self.range_m[index], self.image_velocity[index])

    @staticmethod
    def concatenate(parts: list["Detections"]) -> "Detections":
        if not parts:
            return Detections.empty()
        return Detections(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                            ("camera", "cls", "score", "box", "range_m", "image_velocity")))
