"""The preprocessor and the engine as one pair, chosen once at assembly (perception/node/assembly.py):

- `HostStages`: the preprocessor returns a host batch (CPU fast path, or CUDA with a download) and the
  engine reads it from host memory (`Engine.run`);
- `DeviceStages`: the CUDA preprocessor leaves the batch on the GPU and a device-reading engine (TensorRT)
  reads it in place on the same stream (`Engine.run_device`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from perception.engine.base import DeviceBatch, Engine, EngineInputError, EngineState, Heads
from perception.frame import Frame


class HostPreprocessor(Protocol):
    def run(self, frames: Sequence[Frame]) -> np.ndarray: ...


class DevicePreprocessor(Protocol):
    def enqueue(self, frames: Sequence[Frame]) -> DeviceBatch: ...


class HostStages:
    def __init__(self, preprocessor: HostPreprocessor, engine: Engine) -> None:
        self.preprocessor = preprocessor
        self.engine = engine

    def preprocess(self, frames: Sequence[Frame]) -> np.ndarray:
        return self.preprocessor.run(frames)

    def infer(self, batch: np.ndarray, t_ns: np.ndarray, state: EngineState,
              fresh: np.ndarray) -> tuple[Heads, EngineState]:
        return self.engine.run(batch, t_ns, state, fresh)


class DeviceStages:
    def __init__(self, preprocessor: DevicePreprocessor, engine: Engine) -> None:
        if not engine.reads_device_batches:
            raise EngineInputError(f"{engine.name} reads host batches only; pair it with HostStages")
        self.preprocessor = preprocessor
        self.engine = engine

    def preprocess(self, frames: Sequence[Frame]) -> DeviceBatch:
        return self.preprocessor.enqueue(frames)

    def infer(self, batch: DeviceBatch, t_ns: np.ndarray, state: EngineState,
              fresh: np.ndarray) -> tuple[Heads, EngineState]:
        return self.engine.run_device(batch, t_ns, state, fresh)


Stages = HostStages | DeviceStages
