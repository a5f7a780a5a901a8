"""Ahead-of-time builds of preprocess.cu with nvcc, and the register / spill report of ptxas.

A vehicle ships cubins built by its own toolkit (PTX from a newer toolkit cannot be JIT-compiled by an
older driver), e.g. on the Orin: `python -m kernels.nvcc --arch sm_87 -o preprocess_sm87.cubin`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kernels.batch import KernelError

KERNEL_DIR = Path(__file__).resolve().parent
SOURCE = KERNEL_DIR / "preprocess.cu"
TARGET_ARCHS = ("sm_87", "sm_90")  # Jetson Orin, Hopper
NVCC_FLAGS = ("-O3", "-std=c++17", "-Xptxas", "-v")


def find_nvcc() -> str | None:
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclass(frozen=True)
class KernelResources:
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    stack: int  # bytes


def compile_cubin(arch: str, out: Path, nvcc: str | None = None, source: Path = SOURCE) -> dict[str, KernelResources]:
    """Compile every kernel of `source` (preprocess.cu) for `arch` into the cubin `out`; returns ptxas' report."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise KernelError("nvcc not found (set NVCC or put the CUDA toolkit's bin on PATH)")
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise KernelError(f"arch must look like sm_87, got {arch!r}")
    cmd = [nvcc, "-cubin", f"-arch={arch}", *NVCC_FLAGS, "-I", str(KERNEL_DIR), "-o", str(out), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KernelError(f"nvcc failed for {arch} ({' '.join(cmd)}):\n{result.stderr[-4000:]}")
    return ptxas_resources(result.stdout + result.stderr)


_ENTRY = re.compile(r"Compiling entry function '(\w+)'")
_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def ptxas_resources(report: str) -> dict[str, KernelResources]:
    """Parse `ptxas -v` output into per-kernel registers and spills."""
    resources: dict[str, KernelResources] = {}
    name, stack = None, (0, 0, 0)
    for line in report.splitlines():
        if m := _ENTRY.search(line):
            name, stack = m.group(1), (0, 0, 0)
        elif (m := _STACK.search(line)) and name:
            stack = tuple(int(g) for g in m.groups())
        elif (m := _REGS.search(line)) and name:
            resources[name] = KernelResources(int(m.group(1)), stack[1], stack[2], stack[0])
            name = None
    return resources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_87", help="GPU architecture, e.g. sm_87 (Orin), sm_90 (H100)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="cubin to write")
    args = parser.parse_args(argv)
    try:
        resources = compile_cubin(args.arch, args.output)
    except KernelError as e:
        print(f"error: {e}")
        return 1
    print(f"{'kernel':24} {'registers':>9} {'spill st':>8} {'spill ld':>8} {'stack':>5}")
    for name, r in sorted(resources.items()):
        print(f"{name:24} {r.registers:9d} {r.spill_stores:8d} {r.spill_loads:8d} {r.stack:5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
