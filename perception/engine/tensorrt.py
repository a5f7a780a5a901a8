"""TensorRT engine: build (strongly typed, from the ONNX the precision tools wrote), cache, run on a pycuda stream.

    engine = TensorRTEngine("models/demo.int8.onnx", cuda_graph=True)     # builds or loads the cached plan
    state = engine.initial_state(3)
    heads, state = engine.run(images, t_ns, state, fresh)         # host [N,3,H,W] float32
    heads, state = engine.run_device(batch, t_ns, state, fresh)   # the CUDA preprocessor's DeviceBatch,
                                                                  # read in place on the shared stream

Per step: the small inputs (state ages, dt, fresh) go up from pinned buffers, the feature state stays on the
device (two buffers alternate as input and output: perception.engine.trt_cache.StateRing), and only the
heads and the ages come back, into pinned buffers. Device buffers are allocated once per camera count.
With `cuda_graph=True` the steady-state step (uploads, enqueue, downloads) is captured once per state
buffer parity and replayed. Cache keys, invalidation, the I/O check and the state logic live in trt_cache
(plain Python, tested without a GPU); this module only makes TensorRT / CUDA calls.

Needs `tensorrt` (10.x or 11.x) and `pycuda` (CUDA graphs also `cuda-python`): `pip install perception[gpu]`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from perception.contract import MAX_MODEL_BYTES, ModelContract, ModelExpectation, load_model
from perception.engine.base import DeviceBatch, Engine, EngineInputError
from perception.engine.trt_cache import (
    STATE_INPUT,
    STATE_OUTPUT,
    BuildSettings,
    CameraProfile,
    EngineBuildError,
    EngineCache,
    EngineKey,
    Platform,
    StatePlan,
    StateRing,
    TensorSpec,
    check_engine_io,
    graph_key,
    host_outputs,
    io_shapes,
    obtain_plan,
)


def import_gpu() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineBuildError(f"TensorRT is not installed ({e}); install perception[gpu] on a machine with an "
                               "NVIDIA driver, or use `engine: onnxruntime`") from None
    try:
        import pycuda.autoprimaryctx  # noqa: F401 - the device's primary context, shared with the kernels
        import pycuda.driver as cuda
    except Exception as e:  # noqa: BLE001 - ImportError, or a pycuda LogicError without a driver / device
        raise EngineBuildError(f"pycuda cannot open the GPU ({type(e).__name__}: {e})") from None
    return trt, cuda


def current_platform(trt: Any, cuda: Any) -> Platform:
    device = cuda.Context.get_device()
    return Platform(str(trt.__version__), str(device.name()), tuple(int(v) for v in device.compute_capability()))


def describe_parser_error(err: Any) -> str:
    """One line per ONNX parser error: node index, name and operator where TensorRT reports them."""
    where = []
    node = err.node()
    if node >= 0:
        where.append(f"node {node}")
    for attr in ("node_name", "node_operator"):
        value = getattr(err, attr, None)
        if callable(value) and value():
            where.append(f"{attr.split('_')[1]} {value()!r}")
    return f"{', '.join(where) or 'graph'}: {err.desc()} [{err.code()}]"


def _progress_monitor(trt: Any, report: Callable[[str], None]) -> Any | None:
    """A builder progress monitor printing top-level phases (TensorRT >= 10)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                self.started[phase_name] = time.monotonic()
                report(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            if phase_name in self.started:
                report(f"  {phase_name} done in {time.monotonic() - self.started.pop(phase_name):.1f} s")

    return Monitor()


def build_network(trt: Any, onnx_bytes: bytes, workspace_mib: int, where: str,
                  configure: Callable[[Any, Any], Any] = lambda builder, config: None) -> tuple[bytes, Any]:
    """(serialized engine, what `configure(builder, config)` returned) of an ONNX graph: a strongly typed
    network (precision comes from the graph), the workspace limit, then `configure`'s settings. What
    `configure` returns is held until the build is done (TensorRT does not own objects set on its config)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):   # 10.x; always on (and deprecated) in 11
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)   # owns the weights: alive until the build below
    if not parser.parse(onnx_bytes):
        errors = [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{where}: TensorRT's ONNX parser rejected the model ({len(errors)} errors):\n  "
                               + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    configured = configure(builder, config)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{where}: TensorRT failed to build an engine (see its log above)")
    return bytes(serialized), configured


def build_plan(trt: Any, onnx_bytes: bytes, contract: ModelContract, settings: BuildSettings, timing_cache: bytes,
               where: str, progress: Callable[[str], None]) -> tuple[bytes, bytes]:
    """(serialized engine, updated timing cache) of an exported model, for the settings' camera profile."""

    def configure(builder: Any, config: Any) -> tuple[Any, Any]:
        config.builder_optimization_level = settings.optimization_level
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in settings.profile.shapes(contract).items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(timing_cache)
        if not config.set_timing_cache(cache, False):
            progress("  timing cache does not match this TensorRT / GPU: starting a new one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
        monitor = _progress_monitor(trt, progress)
        if monitor is not None:
            config.progress_monitor = monitor
        return cache, monitor

    plan, (cache, _) = build_network(trt, onnx_bytes, settings.workspace_mib, where, configure)
    return plan, bytes(cache.serialize())


class PlanRuntime:
    """TensorRT's runtime, held by an engine as long as the engine it deserialized."""

    def __init__(self, trt: Any) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)

    def deserialize(self, plan: bytes) -> Any | None:
        """The engine of `plan`, None where TensorRT cannot read it (obtain_plan then rebuilds)."""
        try:
            return self._runtime.deserialize_cuda_engine(plan)
        except Exception:  # noqa: BLE001 - a corrupt plan may raise instead of returning None: both mean rebuild
            return None


def io_tensors(trt: Any, engine: Any) -> list[TensorSpec]:
    """The engine's inputs and outputs as TensorRT reports them."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        specs.append(TensorSpec(name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                                np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name,
                                tuple(engine.get_tensor_shape(name))))
    return specs


def execute(context: Any, cuda: Any, stream: Any, downloads: dict[str, np.ndarray], device: dict[str, Any],
            failure: str) -> None:
    """Enqueues the bound engine on `stream`, then the copies of its outputs `device[name]` into the pinned
    `downloads[name]`; `failure` is the error when TensorRT refuses the enqueue."""
    if not context.execute_async_v3(stream.handle):
        raise EngineInputError(failure)
    for name, host in downloads.items():
        cuda.memcpy_dtoh_async(host, device[name], stream)


class _Buffers:
    """Device and pinned host memory for one camera count, allocated once."""

    def __init__(self, engine: "TensorRTEngine", n: int) -> None:
        cuda = engine.cuda
        ins, outs = io_shapes(engine.contract, n)
        self.n = n
        self.shapes = {**ins, **outs}
        self._keep: list[Any] = []
        alloc = lambda shape: self._alloc(cuda, int(np.prod(shape)) * 4)  # noqa: E731 - float32 everywhere
        self.device = {name: alloc(shape) for name, shape in self.shapes.items()
                       if name not in (STATE_INPUT, STATE_OUTPUT)}
        self.state = (alloc(ins[STATE_INPUT]), alloc(ins[STATE_INPUT]))
        self.state_elems_per_camera = int(np.prod(ins[STATE_INPUT][1:]))
        self.host_in = {name: cuda.pagelocked_empty(ins[name], np.float32) for name in ("state_ages", "dt", "fresh")}
        self.host_images = cuda.pagelocked_empty(ins["images"], np.float32)
        self.host_state = cuda.pagelocked_empty(ins[STATE_INPUT], np.float32)
        self.host_out = {name: cuda.pagelocked_empty(outs[name], np.float32) for name in host_outputs(engine.contract)}
        self.ring = StateRing(ins[STATE_INPUT], lambda i: self._download_state(engine, i))
        self.graphs: dict[tuple, Any] = {}
        self.seen: set[tuple] = set()

    def _alloc(self, cuda: Any, nbytes: int) -> int:
        allocation = cuda.mem_alloc(max(nbytes, 1))
        self._keep.append(allocation)
        return int(allocation)

    def _download_state(self, engine: "TensorRTEngine", index: int) -> np.ndarray:
        out = np.empty(self.shapes[STATE_INPUT], np.float32)
        engine.stream.synchronize()
        engine.cuda.memcpy_dtoh(out, self.state[index])
        return out


class TensorRTEngine(Engine):
    """`cache_dir`: engine cache (default ~/.cache/perception/engines); `plan_path`: use / write this plan
    file instead (vehicle provisioning); `allow_build=False`: a missing or mismatched plan is an
    EngineBuildError instead of a build. `stream`: a pycuda Stream to run on (default: a new one); the CUDA
    preprocessor feeding `run_device` is created on `engine.stream` (perception/node/assembly.py), so the
    engine's work is queued after the kernels' without any synchronisation."""

    reads_device_batches = True

    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, expected: ModelExpectation | None = None, *,
                 profile: CameraProfile = CameraProfile(), cache_dir: str | os.PathLike | None = None,
                 plan_path: str | os.PathLike | None = None, allow_build: bool = True, workspace_mib: int = 1024,
                 optimization_level: int = 3, cuda_graph: bool = False, stream: Any = None,
                 progress: Callable[[str], None] = lambda _: None, max_bytes: int = MAX_MODEL_BYTES) -> None:
        import hashlib

        import onnx

        from perception.precision.metadata import precision_of

        loaded = load_model(path, expected, max_bytes)
        self.contract = loaded.contract
        self.precision = precision_of(onnx.load_model_from_string(loaded.data), str(path)).precision
        self.trt, self.cuda = import_gpu()
        trt = self.trt
        self.profile = profile
        self.cache = EngineCache(cache_dir)
        platform = current_platform(trt, self.cuda)
        settings = BuildSettings(self.precision, profile, workspace_mib, optimization_level)
        self.key = EngineKey(self.contract.model_id, hashlib.sha256(loaded.data).hexdigest(), platform, settings)
        self._runtime = PlanRuntime(trt)

        def build() -> bytes:
            t0 = time.monotonic()
            plan, timing = build_plan(trt, loaded.data, self.contract, settings, self.cache.read_timing_cache(platform),
                                      str(path), progress)
            self.cache.write_timing_cache(platform, timing)
            progress(f"built {len(plan) / 1e6:.1f} MB engine in {time.monotonic() - t0:.1f} s")
            return plan

        self.engine, self.built = obtain_plan(self.cache, self.key, build, self._runtime.deserialize,
                                              allow_build=allow_build, plan_path=plan_path, progress=progress)
        self.plan_path = Path(plan_path) if plan_path is not None else self.cache.plan_path(self.key)
        check_engine_io(io_tensors(trt, self.engine), self.contract, str(self.plan_path))
        self.context = self.engine.create_execution_context()
        self.stream = stream if stream is not None else self.cuda.Stream()
        self.cuda_graph = cuda_graph
        self.name = f"tensorrt[{self.precision}]"
        self._buffers: _Buffers | None = None

    # -- the Engine interface ------------------------------------------------------------------------
    def _infer(self, inputs: dict[str, np.ndarray | DeviceBatch]) -> dict[str, Any]:
        n = int(inputs["dt"].shape[0])
        self.profile.check(n, self.name)
        b = self._buffers_for(n)
        plan = b.ring.plan(inputs[STATE_INPUT])
        cuda, stream = self.cuda, self.stream
        for name, host in b.host_in.items():
            host[...] = inputs[name]
        if plan.upload is not None:
            b.host_state[...] = plan.upload
            cuda.memcpy_htod_async(b.state[plan.read], b.host_state, stream)
        for cam in plan.zero_cameras:
            cuda.memset_d32_async(b.state[plan.read] + cam * b.state_elems_per_camera * 4, 0,
                                  b.state_elems_per_camera, stream)
        image_address = self._stage_images(b, inputs["images"])
        self._bind(b, plan, image_address)
        key = graph_key(n, plan, image_address)
        if self.cuda_graph and key in b.seen:
            self._launch_graph(b, key)
        else:
            self._enqueue(b)
            b.seen.add(key)   # TensorRT wants one plain enqueue with these bindings before a capture
        stream.synchronize()
        handle = b.ring.commit(plan)
        out: dict[str, Any] = {name: host.copy() for name, host in b.host_out.items()}
        out[STATE_OUTPUT] = handle
        return out

    # -- steps -----------------------------------------------------------------------------------------
    def _buffers_for(self, n: int) -> _Buffers:
        if self._buffers is None or self._buffers.n != n:
            self.stream.synchronize()
            self._buffers = _Buffers(self, n)
            for name, shape in io_shapes(self.contract, n)[0].items():
                if not self.context.set_input_shape(name, shape):
                    raise EngineInputError(f"{self.name}: TensorRT refused input shape {list(shape)} for {name}")
            unresolved = self.context.infer_shapes()
            if unresolved:
                raise EngineInputError(f"{self.name}: shapes of {list(unresolved)} cannot be inferred for {n} cameras")
        return self._buffers

    def _stage_images(self, b: _Buffers, images: np.ndarray | DeviceBatch) -> int:
        if isinstance(images, DeviceBatch):
            if int(images.stream) != int(self.stream.handle):
                raise EngineInputError(f"{self.name}: the device batch was written on stream {images.stream:#x}, "
                                       f"the engine runs on {int(self.stream.handle):#x}: create the CUDA "
                                       "preprocessor on engine.stream")
            return int(images.address)
        b.host_images[...] = images
        self.cuda.memcpy_htod_async(b.device["images"], b.host_images, self.stream)
        return b.device["images"]

    def _bind(self, b: _Buffers, plan: StatePlan, image_address: int) -> None:
        ctx = self.context
        for name, address in b.device.items():
            ctx.set_tensor_address(name, address)
        ctx.set_tensor_address("images", image_address)
        ctx.set_tensor_address(STATE_INPUT, b.state[plan.read])
        ctx.set_tensor_address(STATE_OUTPUT, b.state[plan.write])

    def _enqueue(self, b: _Buffers) -> None:
        cuda, stream = self.cuda, self.stream
        for name, host in b.host_in.items():
            cuda.memcpy_htod_async(b.device[name], host, stream)
        execute(self.context, cuda, stream, b.host_out, b.device, f"{self.name}: TensorRT failed to enqueue the step")

    def _launch_graph(self, b: _Buffers, key: tuple) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            raise EngineBuildError("cuda_graph=True needs cuda-python (pip install cuda-python)") from None
        handle = self.stream.handle
        if key not in b.graphs:
            _cuda_check(cudart.cudaStreamBeginCapture(handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
            self._enqueue(b)
            graph = _cuda_check(cudart.cudaStreamEndCapture(handle))
            b.graphs[key] = _cuda_check(cudart.cudaGraphInstantiate(graph, 0))
        _cuda_check(cudart.cudaGraphLaunch(b.graphs[key], handle))


def _cuda_check(result: tuple) -> Any:
    err, *rest = result
    if int(err) != 0:
        raise EngineBuildError(f"CUDA runtime error {err}")
    return rest[0] if rest else None
