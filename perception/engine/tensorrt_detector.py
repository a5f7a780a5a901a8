"""TensorRT for plug-in detectors (a model card, perception/model_card.py): the interface of the ONNX Runtime
engine for such models, on the GPU. Not run on these machines (no TensorRT here): built, loaded and run
through the TensorRT / pycuda helpers of perception/engine/tensorrt.py.

    engine = TensorRTDetector("yolox_nano.onnx")             # builds or loads the cached plan
    outputs, state = engine.run(images, t_ns, state)         # host batch [N,3,H,W] float32
    outputs, state = engine.run_device(batch, t_ns, state)   # the CUDA preprocessor's batch, in place

The graph's batch is fixed (YOLOX exports 1): each camera is one enqueue, reading its slice of the batch
in place, on the engine's stream; the outputs come back into pinned buffers once per frame set.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from perception.contract import MAX_MODEL_BYTES
from perception.engine.base import NO_TIME, DeviceBatch, Engine, EngineInputError, EngineState
from perception.engine.tensorrt import PlanRuntime, build_network, current_platform, execute, import_gpu, io_tensors
from perception.engine.trt_cache import BuildSettings, EngineBuildError, EngineCache, EngineKey, obtain_plan
from perception.model_card import load_any_model


class TensorRTDetector(Engine):
    reads_device_batches = True

    def __init__(self, path: str | os.PathLike, *, card: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, workspace_mib: int = 1024, stream: Any = None,
                 max_bytes: int = MAX_MODEL_BYTES) -> None:
        loaded = load_any_model(path, card, max_bytes)
        if not loaded.contract.stateless:
            raise EngineInputError(f"{path}: an exported temporal model: use perception.engine.tensorrt.TensorRTEngine")
        self.contract = loaded.contract
        self.precision = "fp32"
        self.name = "tensorrt[plug-in]"
        self.trt, self.cuda = import_gpu()
        trt = self.trt
        platform = current_platform(trt, self.cuda)
        settings = BuildSettings(self.precision, workspace_mib=workspace_mib)
        key = EngineKey(self.contract.model_id, hashlib.sha256(loaded.data).hexdigest(), platform, settings)
        self._runtime = PlanRuntime(trt)
        self.engine, self.built = obtain_plan(
            EngineCache(cache_dir), key,
            lambda: build_network(trt, loaded.data, settings.workspace_mib, self.contract.model_id)[0],
            self._runtime.deserialize)
        self.context = self.engine.create_execution_context()
        self.stream = stream if stream is not None else self.cuda.Stream()
        specs = {spec.name: spec for spec in io_tensors(trt, self.engine)}
        self._outputs = [spec.name for spec in specs.values() if not spec.is_input]
        shape = specs[self.contract.input_name].shape
        if shape[0] != 1 or any(d < 0 for d in shape):
            raise EngineBuildError(f"{path}: TensorRTDetector runs graphs with a fixed batch of 1, input is {list(shape)}")
        self._image_bytes = int(np.prod(shape)) * 4
        self._device_image = self.cuda.mem_alloc(self._image_bytes)
        self._host_image = self.cuda.pagelocked_empty(shape, np.float32)
        self._device_out, self._host_out = {}, {}
        for name in self._outputs:
            self._host_out[name] = self.cuda.pagelocked_empty(specs[name].shape, np.dtype(specs[name].dtype))
            self._device_out[name] = self.cuda.mem_alloc(self._host_out[name].nbytes)
            self.context.set_tensor_address(name, int(self._device_out[name]))

    def initial_state(self, num_cameras: int) -> EngineState:
        if num_cameras < 1:
            raise EngineInputError(f"{self.name}: need at least one camera, got {num_cameras}")
        return EngineState(np.zeros((num_cameras, 0), np.float32), np.zeros((num_cameras, 0), np.float32),
                           np.full(num_cameras, NO_TIME, np.int64))

    def run(self, images: np.ndarray, t_ns: np.ndarray, state: EngineState, fresh: np.ndarray | None = None):
        c = self.contract
        want = (state.num_cameras, 3, c.input_height, c.input_width)
        if not isinstance(images, np.ndarray) or images.shape != want or images.dtype != np.float32:
            raise EngineInputError(f"{self.name}: images must be float32 {list(want)}")
        return self._detect(want[0], lambda n: self._upload(images[n])), state

    def run_device(self, batch: DeviceBatch, t_ns: np.ndarray, state: EngineState, fresh: np.ndarray | None = None):
        c = self.contract
        want = (state.num_cameras, 3, c.input_height, c.input_width)
        if not isinstance(batch, DeviceBatch) or tuple(batch.shape) != want or np.dtype(batch.dtype) != np.float32:
            raise EngineInputError(f"{self.name}: the device batch must be float32 {list(want)}")
        if int(batch.stream) != int(self.stream.handle):
            raise EngineInputError(f"{self.name}: the device batch was written on another stream: create the CUDA "
                                   "preprocessor on engine.stream")
        return self._detect(want[0], lambda n: int(batch.address) + n * self._image_bytes), state

    def _upload(self, image: np.ndarray) -> int:
        self._host_image[0] = image
        self.cuda.memcpy_htod_async(self._device_image, self._host_image, self.stream)
        return int(self._device_image)

    def _detect(self, cameras: int, image_address) -> dict[str, np.ndarray]:
        """One enqueue per camera on the engine's stream; `image_address(n)`: camera n's input on the device."""
        per_camera = []
        for n in range(cameras):
            self.context.set_tensor_address(self.contract.input_name, image_address(n))
            execute(self.context, self.cuda, self.stream, self._host_out, self._device_out,
                    f"{self.name}: TensorRT failed to enqueue camera {n}")
            self.stream.synchronize()
            per_camera.append({k: v.copy() for k, v in self._host_out.items()})
        return {k: np.concatenate([p[k] for p in per_camera]) for k in self._outputs}

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("run / run_device are overridden: a plug-in detector has no state inputs")


def open_tensorrt(path: str | os.PathLike, **kw) -> Engine:
    """The TensorRT engine for any model the node runs: TensorRTEngine (exported) or TensorRTDetector."""
    from perception.model_card import model_kind

    if model_kind(path) == "contract":
        from perception.engine.tensorrt import TensorRTEngine

        return TensorRTEngine(path, **kw)
    return TensorRTDetector(path, **kw)
