"""The engine interface: one streaming step of the temporal CNN for all cameras of a frame set.

    engine = OnnxRuntimeEngine("models/demo.onnx", expected)
    state = engine.initial_state(num_cameras)
    heads, state = engine.run(images, t_ns, state, fresh)     # host batch: images [N,3,H,W] float32
    heads, state = engine.run_device(batch, t_ns, state, fresh)  # DeviceBatch on the GPU (TensorRT only)

Every engine runs the same graph contract (perception/contract.py); this base class owns what is common:
input checks, turning frame timestamps into the per-camera `dt` the graph needs, and the state object.
A camera's `dt` is the time since its previous step; its first step after a reset has dt = 0 and an empty
history. Timestamps that go backwards are an error (reset that camera first). `fresh[n] = False` marks a
stale camera whose image is ignored: its history is held and ages by dt (docs/model.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import numpy as np

from perception.contract import ModelContract
from perception.errors import PerceptionError

NO_TIME = np.iinfo(np.int64).min
EMPTY_AGE = 1.0e4  # seconds; must equal perception.model.network.EMPTY_AGE (tests check)


class EngineInputError(PerceptionError):
    """A batch or state handed to an engine does not fit the model (shape, dtype, time order)."""


@dataclass
class Heads:
    """Raw network outputs of one step, per camera (n = batch index = camera)."""

    heatmap: np.ndarray         # [N, classes, h, w] probability
    size: np.ndarray            # [N, 2, h, w] box w, h in network pixels
    offset: np.ndarray          # [N, 2, h, w] centre minus cell index, in cells
    velocity: np.ndarray        # [N, 2, h, w] network pixels per second
    log_depth: np.ndarray       # [N, 1, h, w] ln(z * depth_focal_px / fx), docs/model.md
    velocity_valid: np.ndarray  # [N] 1.0 where the camera had a usable previous frame

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class EngineState:
    """Temporal state of every camera; engines return a new object each step (inputs are not mutated)."""

    features: np.ndarray   # [N, K-1, C, h, w] float32, newest first
    ages: np.ndarray       # [N, K-1] float32 seconds since each stored frame, at time t_ns
    t_ns: np.ndarray       # [N] int64, time of the camera's last step, NO_TIME after a reset

    @property
    def num_cameras(self) -> int:
        return int(self.t_ns.shape[0])

    def reset(self, cameras: list[int] | np.ndarray | None = None) -> "EngineState":
        """A copy with the given cameras (all by default) back to an empty history."""
        idx = slice(None) if cameras is None else np.asarray(cameras, dtype=np.int64)
        out = EngineState(self.features.copy(), self.ages.copy(), self.t_ns.copy())
        out.features[idx] = 0.0
        out.ages[idx] = EMPTY_AGE
        out.t_ns[idx] = NO_TIME
        return out


@dataclass(frozen=True)
class DeviceBatch:
    """A preprocessed batch in GPU memory (kernels.launcher.CudaPreprocessor.enqueue): valid once the work
    queued on `stream` before it has run, so an engine reads it on that same stream."""

    address: int  # device pointer of the C-contiguous [N, 3, H, W] array
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    stream: int   # CUstream / cudaStream_t handle the batch is written on


class Engine(ABC):
    """Load a model, then `run` (host batch) or `run_device` (GPU batch) one step per frame set.
    Subclasses implement `_infer` only; `reads_device_batches` engines get `inputs["images"]` as a
    DeviceBatch from `run_device`."""

    name: str
    precision: str
    contract: ModelContract
    reads_device_batches = False

    def initial_state(self, num_cameras: int) -> EngineState:
        if num_cameras < 1:
            raise EngineInputError(f"{self.name}: need at least one camera, got {num_cameras}")
        c = self.contract
        return EngineState(np.zeros((num_cameras,) + tuple(c.state_shape), np.float32),
                           np.full((num_cameras, c.window - 1), EMPTY_AGE, np.float32),
                           np.full(num_cameras, NO_TIME, np.int64))

    def run(self, images: np.ndarray, t_ns: np.ndarray, state: EngineState,
            fresh: np.ndarray | None = None) -> tuple[Heads, EngineState]:
        """One step on a host batch. images [N,3,H,W] float32 (preprocessed), t_ns [N] capture times (stale
        cameras: the frame set's time), fresh [N] bool (default all True)."""
        want = self._batch_shape(state)
        if not isinstance(images, np.ndarray) or images.shape != want or images.dtype != np.float32:
            got = (images.shape, images.dtype) if isinstance(images, np.ndarray) else type(images).__name__
            raise EngineInputError(f"{self.name}: images must be float32 {list(want)} for {want[0]} cameras, got {got}")
        return self._step(images, t_ns, state, fresh)

    def run_device(self, batch: DeviceBatch, t_ns: np.ndarray, state: EngineState,
                   fresh: np.ndarray | None = None) -> tuple[Heads, EngineState]:
        """One step on a batch the CUDA preprocessor left on the GPU (read in place, on its stream)."""
        if not self.reads_device_batches:
            raise EngineInputError(f"{self.name}: reads host batches only (use run with the downloaded batch)")
        want = self._batch_shape(state)
        if not isinstance(batch, DeviceBatch) or tuple(batch.shape) != want or np.dtype(batch.dtype) != np.float32:
            got = (batch.shape, batch.dtype) if isinstance(batch, DeviceBatch) else type(batch).__name__
            raise EngineInputError(f"{self.name}: the device batch must be float32 {list(want)} (create the CUDA "
                                   f"preprocessor with dtype=float32), got {got}")
        return self._step(batch, t_ns, state, fresh)

    def _batch_shape(self, state: EngineState) -> tuple[int, int, int, int]:
        return (state.num_cameras, 3, self.contract.input_height, self.contract.input_width)

    def _step(self, images: np.ndarray | DeviceBatch, t_ns: np.ndarray, state: EngineState,
              fresh: np.ndarray | None) -> tuple[Heads, EngineState]:
        n = state.num_cameras
        t_ns = np.asarray(t_ns, dtype=np.int64)
        if t_ns.shape != (n,):
            raise EngineInputError(f"{self.name}: t_ns must have one entry per camera ({n}), got shape {t_ns.shape}")
        fresh = np.ones(n, bool) if fresh is None else np.asarray(fresh, dtype=bool)
        if fresh.shape != (n,):
            raise EngineInputError(f"{self.name}: fresh must have one entry per camera ({n}), got shape {fresh.shape}")
        started = state.t_ns != NO_TIME
        backwards = started & (t_ns < state.t_ns)
        if backwards.any():
            cam = int(np.flatnonzero(backwards)[0])
            raise EngineInputError(f"{self.name}: camera {cam}: time went backwards from {state.t_ns[cam]} to "
                                   f"{t_ns[cam]} ns (reset the camera's state after a time jump)")
        dt = np.where(started, (t_ns - np.where(started, state.t_ns, 0)) * 1e-9, 0.0).astype(np.float32)
        out = self._infer({"images": images, "state_features": state.features, "state_ages": state.ages,
                           "dt": dt, "fresh": fresh.astype(np.float32)})
        heads = Heads(out["heatmap"], out["size"], out["offset"], out["velocity"], out["log_depth"],
                      out["velocity_valid"])
        return heads, EngineState(out["state_features_out"], out["state_ages_out"], t_ns.copy())

    @abstractmethod
    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph inputs (contract.INPUTS) -> every graph output by name, as numpy arrays (`images` is a
        DeviceBatch when the step came through `run_device`)."""
