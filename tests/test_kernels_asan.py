"""AddressSanitizer build of the kernel shim: it must report an out-of-bounds read (a frame whose UV plane
is one row short) at the kernel's source line, and stay silent on correct calls that sample every edge.

Each camera gets buffers of exactly the size it declares (frame, table, output), so a read one byte past
any of them lands in ASan's redzone. ASan must be loaded first: the calls run in a child Python started
with LD_PRELOAD=libasan.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kernels.shim import build_shim

PROJECT_ROOT = Path(__file__).resolve().parents[1]

CHILD_PRELUDE = textwrap.dedent(
    """
    import json
    import numpy as np
    from kernels.batch import camera_records, interleaved_table, kernel_name, plan_batch, stage_frames
    from kernels.shim import launch
    from perception.frame import ColorSpec, PixelFormat, buffer_rows
    from perception.preprocess.reference import preprocess_reference
    from tests.test_kernels import NORM, rig_case

    def run_exact(frame, table, dtype, drop_bytes=0):
        # One camera, every buffer its own allocation of exactly the declared size (minus drop_bytes).
        plan = plan_batch([frame], np.dtype(dtype))
        slot = plan.slots[0]
        staged = np.empty(slot.pitch * slot.rows, np.uint8)
        stage_frames([frame], plan, staged)
        source = np.array(staged[: staged.size - drop_bytes])
        pairs = interleaved_table(table)
        records = camera_records([frame], plan, [source.ctypes.data], [pairs.ctypes.data])
        out = np.full((1, 3) + table.map_x.shape, np.nan, dtype)
        grid = (1, 1, 1) if drop_bytes else (2, 3, 1)
        launch(kernel_name(frame.pixel_format, dtype), records, out, NORM, grid, (16, 4, 1), threads=1, asan=True)
        return out
    """
)

CLEAN_CALLS = CHILD_PRELUDE + textwrap.dedent(
    """
    errors = {}
    for fmt in PixelFormat:
        frames, tables = rig_case(fmt, ColorSpec())
        for n, (frame, table) in enumerate(zip(frames, tables)):
            for dtype in (np.float32, np.float16):
                out = run_exact(frame, table, dtype)
                ref = preprocess_reference([frame], [table], NORM, dtype)
                errors[f"{fmt.value}/{n}/{np.dtype(dtype).name}"] = float(np.abs(out.astype(float) - ref).max())
    print(json.dumps(errors))
    """
)

UNDERSIZED_UV = CHILD_PRELUDE + textwrap.dedent(
    """
    frames, tables = rig_case(PixelFormat.NV12, ColorSpec())
    frame, table = frames[2], tables[2]  # 40x24 at the minimum pitch; the table samples the bottom row
    assert frame.stride % 4 == 0 and (table.map_y == frame.height - 1).any()
    run_exact(frame, table, np.float32, drop_bytes=frame.stride)  # the UV plane's last row is missing
    print("no error reported")
    """
)


@pytest.fixture(scope="module")
def asan_env() -> dict[str, str]:
    cxx = os.environ.get("CXX", "g++")
    try:
        libasan = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True,
                                 check=False).stdout.strip()
    except FileNotFoundError:
        pytest.skip(f"no C++ compiler ({cxx}) to build the shim with AddressSanitizer")
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip(f"{cxx} has no libasan.so (install the compiler's AddressSanitizer runtime)")
    build_shim(asan=True)  # compile here, so a build error shows as such and not as a child's crash
    env = dict(os.environ)
    env.update(LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0", OMP_NUM_THREADS="1")
    return env


def run_child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_asan_reports_an_out_of_bounds_read(asan_env: dict[str, str]) -> None:
    result = run_child(UNDERSIZED_UV, asan_env)
    assert result.returncode != 0, f"ASan did not stop the run:\n{result.stdout}\n{result.stderr[-3000:]}"
    report = result.stderr
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in report, report[:3000]
    assert re.search(r"READ of size \d", report), report[:3000]
    # Symbolised to the NV12 sampling code (FORMAT_NV12 = 0) at its line in the kernel source.
    assert re.search(r"in void sample_rgb<0>\(.*\) \S*kernels/preprocess\.cu:\d+", report), report[:3000]
    assert "no error reported" not in result.stdout


def test_asan_is_silent_on_correct_calls(asan_env: dict[str, str]) -> None:
    result = run_child(CLEAN_CALLS, asan_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AddressSanitizer" not in result.stderr
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == 4 * 3 * 2
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-3, f"{worst}: {errors[worst]}"  # and the ASan build computes the right thing
