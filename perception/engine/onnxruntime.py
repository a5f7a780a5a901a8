"""ONNX Runtime engine: the default on CPU; CUDA / TensorRT execution providers when the build has them.

Runs both kinds of model the node knows (perception/model_card.py):

    engine = open_detector("yolox_nano.onnx")          # card next to the file, in its metadata, or card=...
    outputs, state = engine.run(images, t_ns, state)   # plug-in detector: outputs by graph output name
    detections = make_decoder(engine.contract, tables, config)(outputs)   # perception/decode

An exported temporal model returns Heads and its next state; a plug-in detector (`contract.stateless`)
has no state (the state object passes through unchanged) and returns its raw outputs, batch = cameras.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from perception.contract import MAX_MODEL_BYTES, ModelExpectation, check_expectation
from perception.engine.base import NO_TIME, Engine, EngineInputError, EngineState
from perception.engine.ort_graph import split_concat_convs
from perception.model_card import load_any_model

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeEngine(Engine):
    """`threads`: intra-op threads (None = ORT's default, one per physical core). `providers`: None picks
    the best available of PREFERRED_PROVIDERS. `io_binding`: write outputs straight into preallocated
    arrays instead of letting ORT allocate and copy them (benchmarks/model.py measures both). `spin`: let
    idle worker threads spin-wait for the next run; off by default because the node shares its cores with
    preprocessing and tracking (measured on 2 cores at 20 Hz: spinning saves ~1 ms per step but doubles
    the CPU time the engine takes, 41 vs 21 ms per step). `card`: the model card of a plug-in detector
    when it is neither in the model's metadata nor next to it; `expected` applies to exported models.
    `simulate_qdq`: do not fuse Q/DQ into ORT's integer kernels (an INT8 model then computes what its Q/DQ
    nodes define, with exact accumulation; for judging a TensorRT-targeted model on a CPU)."""

    def __init__(self, path: str | os.PathLike, expected: ModelExpectation | None = None, *,
                 threads: int | None = None, providers: list[str] | None = None, io_binding: bool = False,
                 spin: bool = False, card: str | os.PathLike | None = None,
                 max_bytes: int = MAX_MODEL_BYTES, simulate_qdq: bool = False, rewrite: bool = True) -> None:
        loaded = load_any_model(path, card, max_bytes)
        self.contract = loaded.contract
        if expected is not None and not self.contract.stateless:
            check_expectation(self.contract, expected, str(path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        if simulate_qdq:  # Q/DQ run as float ops (exact Q/DQ semantics, as TensorRT computes them; docs/tensorrt.md)
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or PREFERRED_PROVIDERS) if p in available]
        if not chosen:
            raise EngineInputError(f"{path}: none of the execution providers {providers} is available "
                                   f"(this onnxruntime has {available})")
        data, self.concats_split = loaded.data, 0
        if rewrite and chosen[0] == "CPUExecutionProvider":   # exact rewrites for ORT's CPU kernels (engine/ort_graph.py)
            import onnx

            graph = onnx.load_model_from_string(data)
            self.concats_split = split_concat_convs(graph)
            if self.concats_split:
                data = graph.SerializeToString()
        self.session = ort.InferenceSession(data, options, providers=chosen)
        active = self.session.get_providers()[0]
        self.name = f"onnxruntime[{active.removesuffix('ExecutionProvider')}]"
        self.precision = "fp32"
        self.io_binding = io_binding
        self._output_names = [o.name for o in self.session.get_outputs()]
        first = self.session.get_inputs()[0]
        self._batch_one = first.shape[0] == 1  # a fixed batch of 1 (YOLOX exports): one run per camera

    def initial_state(self, num_cameras: int) -> EngineState:
        if not self.contract.stateless:
            return super().initial_state(num_cameras)
        if num_cameras < 1:
            raise EngineInputError(f"{self.name}: need at least one camera, got {num_cameras}")
        return EngineState(np.zeros((num_cameras, 0), np.float32), np.zeros((num_cameras, 0), np.float32),
                           np.full(num_cameras, NO_TIME, np.int64))

    def run(self, images: np.ndarray, t_ns: np.ndarray, state: EngineState, fresh: np.ndarray | None = None):
        """As Engine.run; a plug-in detector returns (outputs by name, the same state)."""
        if not self.contract.stateless:
            return super().run(images, t_ns, state, fresh)
        c = self.contract
        want = (state.num_cameras, 3, c.input_height, c.input_width)
        if not isinstance(images, np.ndarray) or images.shape != want or images.dtype != np.float32:
            got = (images.shape, images.dtype) if isinstance(images, np.ndarray) else type(images).__name__
            raise EngineInputError(f"{self.name}: images must be float32 {list(want)} for {want[0]} cameras, got {got}")
        return self.detect(images), state

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """A plug-in detector's outputs by name for a batch [N,3,H,W] (one camera per batch index)."""
        name = self.contract.input_name
        if not self._batch_one:
            return dict(zip(self._output_names, self.session.run(self._output_names, {name: images})))
        runs = [self.session.run(self._output_names, {name: images[n:n + 1]}) for n in range(images.shape[0])]
        return {k: np.concatenate([r[i] for r in runs]) for i, k in enumerate(self._output_names)}

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


def open_detector(path: str | os.PathLike, card: str | os.PathLike | None = None, **kw) -> OnnxRuntimeEngine:
    """An ONNX Runtime engine for any model the node runs (exported or plug-in); `kw` as OnnxRuntimeEngine."""
    return OnnxRuntimeEngine(path, card=card, **kw)
