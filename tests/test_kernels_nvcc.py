"""nvcc compiles every kernel of preprocess.cu for the vehicle (sm_87, Orin) and the lab GPUs (sm_90), with
no spills and a register budget that keeps 5+ blocks of 256 threads per SM; and the self-contained text
that the runtime compilers (pycuda, CuPy/NVRTC) get compiles too. No GPU is needed to compile."""

from __future__ import annotations

import pytest

from kernels.batch import KERNEL_NAMES
from kernels.launcher import kernel_source
from kernels.nvcc import TARGET_ARCHS, compile_cubin, find_nvcc, ptxas_resources

MAX_REGISTERS = 48  # 65536 / (256 * 48) = 5 resident blocks per SM

pytestmark = pytest.mark.skipif(find_nvcc() is None, reason="nvcc (CUDA toolkit) not installed")


@pytest.mark.parametrize("arch", TARGET_ARCHS)
def test_every_kernel_compiles_without_spills(arch: str, tmp_path) -> None:
    cubin = tmp_path / f"preprocess_{arch}.cubin"
    resources = compile_cubin(arch, cubin)
    assert cubin.read_bytes()[:4] == b"\x7fELF"
    assert sorted(resources) == sorted(KERNEL_NAMES)
    for name, r in resources.items():
        assert r.spill_stores == 0 and r.spill_loads == 0 and r.stack == 0, f"{arch} {name}: {r}"
        assert r.registers <= MAX_REGISTERS, f"{arch} {name}: {r.registers} registers"


def test_runtime_compiler_source_is_self_contained(tmp_path) -> None:
    """kernel_source() pastes cuda_compat.h in: it must compile alone, away from the header."""
    source = kernel_source()
    assert '#include "cuda_compat.h"' not in source
    copy = tmp_path / "preprocess_runtime.cu"
    copy.write_text(source)
    resources = compile_cubin("sm_90", tmp_path / "runtime.cubin", source=copy)
    assert sorted(resources) == sorted(KERNEL_NAMES)


def test_ptxas_report_parsing() -> None:
    report = """ptxas info    : Compiling entry function 'preprocess_nv12_f16' for 'sm_87'
ptxas info    : Function properties for preprocess_nv12_f16
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 52 registers, used 0 barriers, 408 bytes cmem[0]
ptxas info    : Compiling entry function 'preprocess_bgr8_f32' for 'sm_87'
ptxas info    : Function properties for preprocess_bgr8_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 408 bytes cmem[0]
"""
    r = ptxas_resources(report)
    assert (r["preprocess_nv12_f16"].registers, r["preprocess_nv12_f16"].spill_stores,
            r["preprocess_nv12_f16"].spill_loads, r["preprocess_nv12_f16"].stack) == (52, 8, 4, 16)
    assert r["preprocess_bgr8_f32"].registers == 40 and r["preprocess_bgr8_f32"].spill_stores == 0
