"""ONNX Runtime engine: the default on CPU; CUDA / TensorRT execution providers when the build has them."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from perception.contract import MAX_MODEL_BYTES, ModelExpectation, load_model
from perception.engine.base import Engine, EngineInputError

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeEngine(Engine):
    """`threads`: intra-op threads (None = ORT's default, one per physical core). `providers`: None picks
    the best available of PREFERRED_PROVIDERS. `io_binding`: write outputs straight into preallocated
    arrays instead of letting ORT allocate and copy them (benchmarks/model.py measures both). `spin`: let
    idle worker threads spin-wait for the next run; off by default because the node shares its cores with
    preprocessing and tracking (measured on 2 cores at 20 Hz: spinning saves ~1 ms per step but doubles
    the CPU time the engine takes, 41 vs 21 ms per step)."""

    def __init__(self, path: str | os.PathLike, expected: ModelExpectation | None = None, *,
                 threads: int | None = None, providers: list[str] | None = None, io_binding: bool = False,
                 spin: bool = False, max_bytes: int = MAX_MODEL_BYTES) -> None:
        loaded = load_model(path, expected, max_bytes)
        self.contract = loaded.contract
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PREFERRED_PROVIDERS) if p in available]
        if not chosen:
            raise EngineInputError(f"{path}: none of the execution providers {providers} is available "
                                   f"(this onnxruntime has {available})")
        self.session = ort.InferenceSession(loaded.data, options, providers=chosen)
        active = self.session.get_providers()[0]
        self.name = f"onnxruntime[{active.removesuffix('ExecutionProvider')}]"
        self.precision = "fp32"
        self.io_binding = io_binding
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            return dict(zip(self._output_names, self.session.run(self._output_names, inputs)))
        binding = self.session.io_binding()
        for name, value in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        outputs = {}
        for name, shape in self._output_shapes(inputs["images"].shape[0]).items():
            outputs[name] = np.empty(shape, np.float32)
            binding.bind_output(name, "cpu", 0, np.float32, shape, outputs[name].ctypes.data)
        self.session.run_with_iobinding(binding)
        return outputs

    def _output_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
        _, outs = self.contract.expected_io()
        return {name: (n,) + tuple(shape[1:]) for name, shape in outs.items()}
