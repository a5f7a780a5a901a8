"""Run the CUDA kernels of preprocess.cu on the CPU: g++ builds the same source through cuda_compat.h,
shim_host.cpp loops over every block and thread, ctypes calls it.

This is how CI tests the kernels without a GPU (parity, every-element-written, launch-geometry
independence, AddressSanitizer): `CudaPreprocessor(..., backend="shim")` runs the whole GPU launcher with
`ShimDevice` as its device, and `launch` runs one kernel on caller-made buffers. The built library is cached under ~/.cache/perception/kernels keyed by
the sources, the flags and the compiler version, so only the first run pays for the ~1 s compile.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import numpy.typing as npt

from kernels.batch import BLOCK, KERNEL_NAMES, KernelError, normalization_args
from perception.preprocess.common import Normalization

KERNEL_DIR = Path(__file__).resolve().parent
SOURCES = ("preprocess.cu", "cuda_compat.h", "shim_host.cpp")
FLAGS = (
    "-x", "c++", "-std=c++17", "-O2", "-fopenmp", "-fPIC", "-shared",
    "-ftls-model=initial-exec",  # plain TLS loads for threadIdx & co. instead of a __tls_get_addr call each
    "-ffp-contract=off",  # no fused multiply-adds: the same float32 arithmetic as the numpy reference
    "-fno-strict-aliasing",  # the kernels read uint8 rows as 32-bit words
)
ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")


def cache_dir() -> Path:
    root = os.environ.get("PERCEPTION_CACHE") or Path.home() / ".cache" / "perception"
    return Path(root) / "kernels"


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise KernelError(f"the CPU kernel shim needs a C++ compiler: {cxx!r} not found (set CXX)")
    return cxx


def _flags(asan: bool) -> tuple[str, ...]:
    return FLAGS + (ASAN_FLAGS if asan else ())


@functools.lru_cache(maxsize=None)
def build_shim(asan: bool = False) -> Path:
    """Path of the shim library for the current sources, compiling it if it is not cached yet."""
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(version.encode())
    digest.update("\0".join(_flags(asan)).encode())
    for name in SOURCES:
        digest.update((KERNEL_DIR / name).read_bytes())
    target = cache_dir() / f"preprocess-{'asan-' if asan else ''}{digest.hexdigest()[:20]}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    except OSError as e:
        raise KernelError(f"cannot write the kernel shim cache {target.parent} ({e}); set PERCEPTION_CACHE") from e
    os.close(fd)
    cmd = [cxx, *_flags(asan), "-I", str(KERNEL_DIR), "-o", tmp, str(KERNEL_DIR / "shim_host.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        os.unlink(tmp)
        raise KernelError(f"building the kernel shim failed ({' '.join(cmd)}):\n{result.stderr[-4000:]}")
    os.replace(tmp, target)  # atomic: concurrent builders all end with a complete library
    return target


@functools.lru_cache(maxsize=None)
def load_shim(asan: bool = False) -> ctypes.CDLL:
    """The shim library, loaded once; an ASan build only works in a process started with libasan preloaded."""
    lib = ctypes.CDLL(str(build_shim(asan)))
    argtypes = [ctypes.c_uint] * 6 + [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                      ctypes.c_int, ctypes.c_int] + [ctypes.c_float] * 6 + [ctypes.c_int] \
        + [ctypes.c_float] * 3
    for name in KERNEL_NAMES:
        fn = getattr(lib, f"shim_{name}")
        fn.argtypes = argtypes
        fn.restype = None
    return lib


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _check_geometry(grid: Sequence[int], block: Sequence[int]) -> None:
    if len(grid) != 3 or len(block) != 3 or min(*grid, *block) < 1:
        raise KernelError(f"grid {tuple(grid)} and block {tuple(block)} must be 3 positive ints each")


def launch(
    kernel: str,
    records: np.ndarray,
    out: np.ndarray,
    norm: Normalization,
    grid: Sequence[int],
    block: Sequence[int] = BLOCK,
    threads: int | None = None,
    asan: bool = False,
) -> None:
    """One launch of `kernel` over the camera `records` (host addresses), writing `out` [N, 3, H, W].

    The caller keeps the memory the records point at alive; nothing here checks it (that is what the
    ASan build is for).
    """
    expected = np.float16 if kernel.endswith("f16") else np.float32
    if out.dtype != expected or out.ndim != 4 or out.shape[1] != 3 or not out.flags.c_contiguous:
        raise KernelError(f"{kernel} writes a C-contiguous [N, 3, H, W] {np.dtype(expected)} array, "
                          f"got {out.dtype} {out.shape}")
    records = np.ascontiguousarray(records)
    args = (records.ctypes.data, len(records), out.ctypes.data, out.shape[3], out.shape[2],
            *normalization_args(norm))
    ShimDevice(threads, asan).launch(kernel, tuple(grid), tuple(block), args)


class _Done:
    """A finished event: on the CPU every copy and launch completes before the call returns."""

    def synchronize(self) -> None:
        pass


class ShimDevice:
    """The CPU as the device of kernels.launcher.CudaPreprocessor (backend="shim"): "device" memory is
    host memory, copies are memmove, launches run the shim library's host loop, all synchronously."""

    name = "shim"
    stream_handle = 0

    def __init__(self, threads: int | None = None, asan: bool = False) -> None:
        self.threads = threads or default_threads()
        self.lib = load_shim(asan)
        self._buffers: list[np.ndarray] = []

    def alloc(self, nbytes: int) -> int:
        buffer = np.empty(max(nbytes, 1), np.uint8)  # its own allocation: ASan sees overruns of it
        self._buffers.append(buffer)
        return buffer.ctypes.data

    def pinned(self, shape: Sequence[int] | int, dtype: npt.DTypeLike) -> np.ndarray:
        return np.empty(shape, dtype)

    def upload(self, address: int, host: np.ndarray) -> None:
        ctypes.memmove(address, np.ascontiguousarray(host).ctypes.data, host.nbytes)

    def download(self, host: np.ndarray, address: int) -> None:
        if not host.flags.c_contiguous:
            raise KernelError("download needs a C-contiguous host array")
        ctypes.memmove(host.ctypes.data, address, host.nbytes)

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], args: Sequence) -> None:
        if kernel not in KERNEL_NAMES:
            raise KernelError(f"unknown kernel {kernel!r}; known: {', '.join(KERNEL_NAMES)}")
        _check_geometry(grid, block)
        records, count, out, out_w, out_h, *affine, bgr, pad_r, pad_g, pad_b = args
        getattr(self.lib, f"shim_{kernel}")(*(int(g) for g in grid), *(int(b) for b in block), self.threads,
                                            int(records), int(count), int(out), int(out_w), int(out_h),
                                            *(float(v) for v in affine), int(bgr),
                                            float(pad_r), float(pad_g), float(pad_b))

    def event(self) -> _Done:
        return _Done()

    def synchronize(self) -> None:
        pass
