"""The same kernels on a real GPU (pycuda or CuPy): parity with the numpy reference, every element written,
the exposed device batch equal to the downloaded one. Skipped without an NVIDIA GPU (tests/conftest.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from kernels.launcher import GPU_BACKENDS, CudaPreprocessor
from perception.frame import ColorSpec, PixelFormat
from perception.preprocess.reference import preprocess_reference
from tests.test_kernels import (
    GEOMETRIES,
    NORM,
    RGB_CASES,
    SIZES,
    YUV_CASES,
    adversarial_table,
    assert_matches_reference,
    pitches,
    random_frame,
    rig_case,
    run_poisoned,
    shim,
)

pytestmark = pytest.mark.gpu

INSTALLED = [b for b in GPU_BACKENDS if importlib.util.find_spec(b) is not None]


@pytest.fixture(params=INSTALLED or ["none installed"])
def backend(request) -> str:
    if request.param not in GPU_BACKENDS:
        pytest.skip("neither pycuda nor CuPy is installed")
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("fmt", "color"), YUV_CASES + RGB_CASES,
                         ids=[f"{f.value}-{c.matrix.value}-{c.range.value}" for f, c in YUV_CASES + RGB_CASES])
def test_gpu_matches_reference(backend: str, fmt: PixelFormat, color: ColorSpec, dtype: type) -> None:
    frames, tables = rig_case(fmt, color)
    pre = CudaPreprocessor(tables, NORM, dtype, backend=backend)
    out = run_poisoned(pre, frames)
    assert_matches_reference(out, preprocess_reference(frames, tables, NORM, dtype))
    # GPU and CPU shim run the same source; only fused multiply-adds may differ (~1e-6).
    cpu = shim(tables, dtype).run(frames)
    assert np.abs(out.astype(np.float64) - cpu).max() <= (1e-5 if dtype == np.float32 else 1e-3)


def test_gpu_mixed_formats_and_device_output(backend: str) -> None:
    rng = np.random.default_rng(11)
    frames, tables = [], []
    for fmt, k in [(PixelFormat.BGR8, 0), (PixelFormat.NV12, 1), (PixelFormat.YUYV, 2), (PixelFormat.NV12, 2)]:
        w, h = SIZES[fmt][k]
        frames.append(random_frame(fmt, w, h, pitches(fmt)[k], ColorSpec(), rng))
        tables.append(adversarial_table(w, h, rng))
    pre = CudaPreprocessor(tables, NORM, np.float16, backend=backend)
    out = run_poisoned(pre, frames)
    assert_matches_reference(out, preprocess_reference(frames, tables, NORM, np.float16))

    device = pre.enqueue(frames)
    assert device.address != 0 and device.shape == out.shape and device.dtype == np.float16
    copied = pre.gpu.pinned(device.shape, device.dtype)
    pre.gpu.download(copied, device.address)
    pre.gpu.synchronize()
    np.testing.assert_array_equal(copied, out)


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_gpu_results_do_not_depend_on_launch_geometry(backend: str, fmt: PixelFormat) -> None:
    frames, tables = rig_case(fmt, ColorSpec(), seed=3)
    expected = run_poisoned(CudaPreprocessor(tables, NORM, np.float16, backend=backend), frames)
    for grid, block in GEOMETRIES:
        pre = CudaPreprocessor(tables, NORM, np.float16, backend=backend, grid=grid, block=block)
        np.testing.assert_array_equal(run_poisoned(pre, frames), expected, err_msg=f"grid {grid} block {block}")


def test_gpu_repeated_runs_use_the_new_frames(backend: str) -> None:
    frames_a, tables = rig_case(PixelFormat.NV12, ColorSpec(), seed=1)
    frames_b, _ = rig_case(PixelFormat.NV12, ColorSpec(), seed=2)
    pre = CudaPreprocessor(tables, NORM, np.float32, backend=backend)
    for frames in (frames_a, frames_b, frames_a):
        assert_matches_reference(run_poisoned(pre, frames), preprocess_reference(frames, tables, NORM, np.float32))
