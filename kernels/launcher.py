"""Run the kernels of preprocess.cu on an NVIDIA GPU: pycuda on the vehicle, CuPy where pycuda is absent
(the lab GPUs), or on the CPU through the g++ shim (backend "shim": CI, which has no GPU).

`CudaPreprocessor.run(frames)` has the shape of the CPU `FastPreprocessor.run` (returns the host batch
[N, 3, H, W]); `enqueue(frames)` stops before the download and returns the batch's `DeviceBatch` so that
a TensorRT engine reads it in place (`Engine.run_device`) on the same stream: the preprocessor is created
on the engine's stream (`stream=engine.stream`), so no synchronisation sits between the two. Per call:
frames are copied into one pinned staging buffer, uploaded with one async copy, and every camera is
preprocessed by one launch per pixel format present (one for a usual rig). Remap tables are uploaded once,
at construction.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt

from kernels.batch import (
    BLOCK,
    CAMERA_DTYPE,
    KERNEL_NAMES,
    BatchPlan,
    KernelError,
    camera_records,
    default_grid,
    interleaved_table,
    normalization_args,
    plan_batch,
    plan_key,
    stage_frames,
    staged_addresses,
)
from perception.engine.base import DeviceBatch
from perception.frame import Frame
from perception.preprocess.common import (
    Normalization,
    RemapMaps,
    check_frames,
    check_output_dtype,
    check_tables,
)

KERNEL_DIR = Path(__file__).resolve().parent
GPU_BACKENDS = ("pycuda", "cupy")
BACKENDS = GPU_BACKENDS + ("shim",)


def kernel_source() -> str:
    """preprocess.cu with cuda_compat.h pasted in: one self-contained text, so runtime compilers need no
    include path and their caches (keyed by the text) see header changes too."""
    header = (KERNEL_DIR / "cuda_compat.h").read_text()
    source = (KERNEL_DIR / "preprocess.cu").read_text()
    return re.sub(r'^#include "cuda_compat.h"$', lambda _: header, source, count=1, flags=re.M)


class _Pycuda:
    """pycuda: SourceModule from the kernel source (pycuda caches the cubin), or a cubin built ahead."""

    name = "pycuda"

    def __init__(self, cubin: Path | None, stream: Any = None) -> None:
        import pycuda.autoprimaryctx  # noqa: F401 - the device's primary context, shared with TensorRT
        import pycuda.driver as cuda

        self.cuda = cuda
        if cubin is not None:
            module = cuda.module_from_file(str(cubin))
        else:
            from pycuda.compiler import SourceModule

            module = SourceModule(kernel_source(), options=["-O3", "-std=c++17"], no_extern_c=True)
        self.functions = {name: module.get_function(name) for name in KERNEL_NAMES}
        self.stream = stream if stream is not None else cuda.Stream()
        self.stream_handle = int(self.stream.handle)
        self._keep: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(max(nbytes, 1))
        self._keep.append(allocation)
        return int(allocation)

    def pinned(self, shape: Sequence[int] | int, dtype: npt.DTypeLike) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)

    def upload(self, address: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(address, host, self.stream)

    def download(self, host: np.ndarray, address: int) -> None:
        self.cuda.memcpy_dtoh_async(host, address, self.stream)

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], args: Sequence[Any]) -> None:
        self.functions[kernel](*args, block=block, grid=grid, stream=self.stream)

    def event(self) -> Any:
        return self.cuda.Event().record(self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()


class _Cupy:
    """CuPy: RawModule (NVRTC) from the same kernel source; CuPy caches the compiled module."""

    name = "cupy"

    def __init__(self, cubin: Path | None, stream: Any = None) -> None:
        import cupy
        import cupyx

        self.cp, self.cupyx = cupy, cupyx
        if cubin is not None:
            module = cupy.RawModule(path=str(cubin))
        else:
            module = cupy.RawModule(code=kernel_source(), options=("-std=c++17",))
        self.functions = {name: module.get_function(name) for name in KERNEL_NAMES}
        self.stream = stream if stream is not None else cupy.cuda.Stream(non_blocking=True)
        self.stream_handle = int(self.stream.ptr)
        self._keep: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        memory = self.cp.cuda.alloc(max(nbytes, 1))
        self._keep.append(memory)
        return int(memory.ptr)

    def pinned(self, shape: Sequence[int] | int, dtype: npt.DTypeLike) -> np.ndarray:
        return self.cupyx.empty_pinned(shape, dtype)

    def upload(self, address: int, host: np.ndarray) -> None:
        rt = self.cp.cuda.runtime
        rt.memcpyAsync(address, host.ctypes.data, host.nbytes, rt.memcpyHostToDevice, self.stream_handle)

    def download(self, host: np.ndarray, address: int) -> None:
        rt = self.cp.cuda.runtime
        rt.memcpyAsync(host.ctypes.data, address, host.nbytes, rt.memcpyDeviceToHost, self.stream_handle)

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], args: Sequence[Any]) -> None:
        with self.stream:
            self.functions[kernel](grid, block, tuple(args))

    def event(self) -> Any:
        return self.stream.record()

    def synchronize(self) -> None:
        self.stream.synchronize()


def available_backend() -> str | None:
    """The backend `CudaPreprocessor` would use here ("pycuda" or "cupy"), or None without a usable GPU."""
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > 0:
            return "pycuda"
    except Exception:  # noqa: BLE001 - not installed, no driver, no device: all mean "not this backend"
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return "cupy"
    except Exception:  # noqa: BLE001
        pass
    return None


def _open_backend(backend: str | None, cubin: Path | None, stream: Any) -> Any:
    if backend is None:
        backend = available_backend()
        if backend is None:
            raise KernelError("preprocess: cuda needs an NVIDIA GPU with pycuda or CuPy; none is usable here")
    if backend not in BACKENDS:
        raise KernelError(f"unknown CUDA backend {backend!r}; use one of {BACKENDS}")
    if backend == "shim":
        from kernels.shim import ShimDevice

        return ShimDevice()
    if cubin is not None and not Path(cubin).is_file():
        raise KernelError(f"cubin {cubin} does not exist (build it with python -m kernels.nvcc)")
    try:
        return _Pycuda(cubin, stream) if backend == "pycuda" else _Cupy(cubin, stream)
    except ImportError as e:
        raise KernelError(f"CUDA backend {backend} is not installed: {e}") from e


class CudaPreprocessor:
    """docs/preprocess.md on the GPU for a fixed rig (one remap table per camera).

    `backend`: "pycuda", "cupy" (default: the first usable) or "shim" (the CPU). `cubin`: kernels built
    ahead by `python -m kernels.nvcc` instead of compiling the source at start. `grid` / `block` override
    the launch geometry (tests; the kernels are correct for any). `stream`: the backend's stream object to
    queue on (a pycuda `Stream` / CuPy `Stream`; default a new one): the TensorRT engine's, to share it.
    """

    def __init__(
        self,
        tables: Sequence[RemapMaps],
        norm: Normalization = Normalization(),
        dtype: npt.DTypeLike = np.float16,
        backend: str | None = None,
        cubin: Path | None = None,
        grid: Sequence[int] | None = None,
        block: Sequence[int] = BLOCK,
        stream: Any = None,
    ) -> None:
        self.grid = tuple(grid) if grid is not None else None
        self.block = tuple(block)
        self.tables = list(tables)
        self.dtype = check_output_dtype(dtype)
        self.out_h, self.out_w = check_tables(self.tables)
        self.shape = (len(self.tables), 3, self.out_h, self.out_w)
        self._norm_args = normalization_args(norm)
        self.gpu = _open_backend(backend, cubin, stream)

        pairs = np.stack([interleaved_table(t) for t in self.tables])  # [N, H, W, 2]
        self._tables = self.gpu.alloc(pairs.nbytes)
        pinned_pairs = self.gpu.pinned(pairs.shape, np.float32)
        pinned_pairs[...] = pairs
        self.gpu.upload(self._tables, pinned_pairs)
        self.gpu.synchronize()
        self._table_addresses = [self._tables + n * pairs[0].nbytes for n in range(len(self.tables))]

        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._output = self.gpu.alloc(nbytes)
        self.host_output = self.gpu.pinned(self.shape, self.dtype)
        self._records = self.gpu.alloc(len(self.tables) * CAMERA_DTYPE.itemsize)
        self._plan: BatchPlan | None = None
        self._staging = np.empty(0, np.uint8)
        self._device_staging = 0
        self._uploaded: Any = None  # event: the staging buffer may be refilled once it has fired

    def _replan(self, frames: Sequence[Frame]) -> BatchPlan:
        """New frame formats or sizes: new staging buffers and camera records (rare: once per rig)."""
        self.gpu.synchronize()
        plan = plan_batch(frames, self.dtype)
        if plan.staging_bytes > self._staging.nbytes:
            self._staging = self.gpu.pinned(plan.staging_bytes, np.uint8)
            self._device_staging = self.gpu.alloc(plan.staging_bytes)
        records = self.gpu.pinned(len(frames), CAMERA_DTYPE)
        records[...] = camera_records(frames, plan, staged_addresses(plan, self._device_staging),
                                      self._table_addresses)
        self.gpu.upload(self._records, records)
        self.gpu.synchronize()
        self._plan = plan
        return plan

    def upload(self, frames: Sequence[Frame]) -> None:
        """Stage one frame per camera in pinned memory and queue its copy to the GPU."""
        check_frames(frames, self.tables)
        plan = self._plan
        if plan is None or plan.key != plan_key(frames):
            plan = self._replan(frames)
        if self._uploaded is not None:
            self._uploaded.synchronize()  # the previous upload has left the staging buffer
        stage_frames(frames, plan, self._staging)
        self.gpu.upload(self._device_staging, self._staging[: plan.staging_bytes])
        self._uploaded = self.gpu.event()

    def launch(self) -> DeviceBatch:
        """Queue the kernels on the frames uploaded last; the batch stays on the GPU."""
        if self._plan is None:
            raise KernelError("launch() before any upload(frames)")
        for step in self._plan.launches:
            args = [np.uint64(self._records + step.first * CAMERA_DTYPE.itemsize), np.int32(step.count),
                    np.uint64(self._output), np.int32(self.out_w), np.int32(self.out_h), *self._norm_args]
            grid = self.grid or default_grid(self.out_w, self.out_h, step.count)
            self.gpu.launch(step.kernel, grid, self.block, args)
        return DeviceBatch(self._output, self.shape, self.dtype, self.gpu.stream_handle)

    def enqueue(self, frames: Sequence[Frame]) -> DeviceBatch:
        """upload + launch: the batch for a TensorRT engine to read in place, on `DeviceBatch.stream`."""
        self.upload(frames)
        return self.launch()

    def run(self, frames: Sequence[Frame]) -> np.ndarray:
        """Preprocess and download: [N, 3, H, W] host array (pinned; overwritten by the next call)."""
        self.enqueue(frames)
        self.gpu.download(self.host_output, self._output)
        self.gpu.synchronize()
        return self.host_output
