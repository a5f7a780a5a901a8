"""Run the CUDA kernels of preprocess.cu on the CPU: g++ builds the same source through cuda_compat.h,
shim_host.cpp loops over every block and thread, ctypes calls it.

This is how CI tests the kernels without a GPU (parity, every-element-written, launch-geometry
independence, AddressSanitizer). The built library is cached under ~/.cache/perception/kernels keyed by
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

from kernels.batch import (
    BLOCK,
    KERNEL_NAMES,
    KernelError,
    BatchPlan,
    camera_records,
    default_grid,
    interleaved_table,
    plan_batch,
    plan_key,
    stage_frames,
    staged_addresses,
)
from perception.frame import Frame
from perception.preprocess.common import (
    Normalization,
    RemapMaps,
    check_frames,
    check_output_dtype,
    check_tables,
    normalization_affine,
)

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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
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
                                      ctypes.c_int, ctypes.c_int] + [ctypes.c_float] * 6
    for name in KERNEL_NAMES:
        fn = getattr(lib, f"shim_{name}")
        fn.argtypes = argtypes
        fn.restype = None
    return lib


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


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
    if kernel not in KERNEL_NAMES:
        raise KernelError(f"unknown kernel {kernel!r}; known: {', '.join(KERNEL_NAMES)}")
    if len(grid) != 3 or len(block) != 3 or min(*grid, *block) < 1:
        raise KernelError(f"grid {tuple(grid)} and block {tuple(block)} must be 3 positive ints each")
    expected = np.float16 if kernel.endswith("f16") else np.float32
    if out.dtype != expected or out.ndim != 4 or out.shape[1] != 3 or not out.flags.c_contiguous:
        raise KernelError(f"{kernel} writes a C-contiguous [N, 3, H, W] {np.dtype(expected)} array, "
                          f"got {out.dtype} {out.shape}")
    records = np.ascontiguousarray(records)
    scale, bias = normalization_affine(norm)
    fn = getattr(load_shim(asan), f"shim_{kernel}")
    fn(*(int(g) for g in grid), *(int(b) for b in block), threads or default_threads(),
       records.ctypes.data, len(records), out.ctypes.data, out.shape[3], out.shape[2],
       *(float(s) for s in scale), *(float(b) for b in bias))


class ShimPreprocessor:
    """The CUDA preprocessing path executed on the CPU: `.run(frames) -> [N, 3, H, W]` (owns the buffer).

    `grid` / `block` override the launch geometry (the default is the GPU launcher's).
    """

    def __init__(
        self,
        tables: Sequence[RemapMaps],
        norm: Normalization = Normalization(),
        dtype: npt.DTypeLike = np.float32,
        grid: Sequence[int] | None = None,
        block: Sequence[int] = BLOCK,
        threads: int | None = None,
        asan: bool = False,
    ) -> None:
        self.tables = list(tables)
        self.norm = norm
        self.dtype = check_output_dtype(dtype)
        self.out_h, self.out_w = check_tables(self.tables)
        self.grid = tuple(grid) if grid is not None else None
        self.block = tuple(block)
        self.threads = threads
        self.asan = asan
        self._table_pairs = [interleaved_table(t) for t in self.tables]
        self.output = np.empty((len(self.tables), 3, self.out_h, self.out_w), self.dtype)
        self._plan: BatchPlan | None = None
        self._staging = np.empty(0, np.uint8)

    def run(self, frames: Sequence[Frame]) -> np.ndarray:
        check_frames(frames, self.tables)
        plan = self._plan
        if plan is None or plan.key != plan_key(frames):
            plan = self._plan = plan_batch(frames, self.dtype)
            self._staging = np.empty(plan.staging_bytes, np.uint8)
        stage_frames(frames, plan, self._staging)
        records = camera_records(frames, plan, staged_addresses(plan, self._staging.ctypes.data),
                                 [t.ctypes.data for t in self._table_pairs])
        for step in plan.launches:
            grid = self.grid or default_grid(self.out_w, self.out_h, step.count)
            launch(step.kernel, records[step.first : step.first + step.count], self.output, self.norm,
                   grid, self.block, self.threads, self.asan)
        return self.output
