"""The CUDA preprocessing kernels (kernels/preprocess.cu) run on the CPU through the g++ shim: parity with
the numpy reference, every output element written, results independent of the launch geometry.

The case builders here are shared with test_kernels_asan.py and test_kernels_gpu.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from calib.camera import CameraModel
from calib.remap import build_remap
from kernels.batch import KernelError, plan_batch
from kernels.launcher import CudaPreprocessor
from kernels.shim import launch
from perception.errors import FrameError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat, buffer_rows, min_stride
from perception.preprocess.common import Normalization
from perception.preprocess.reference import preprocess_reference

NET_W, NET_H = 29, 21  # odd, and another aspect than the sources (letterbox bars)
NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
COLORS = [ColorSpec(m, r) for m in ColorMatrix for r in ColorRange]

# Per format: three source sizes (odd where the format allows) and their row pitches in bytes:
# camera 0 at the minimum pitch, camera 1 at a 4-byte multiple above it (the kernel reads it as is),
# camera 2 at an odd pitch (repacked by the launcher) or a minimum pitch that is a 4-byte multiple.
SIZES = {
    PixelFormat.NV12: [(38, 22), (50, 30), (40, 24)],
    PixelFormat.YUYV: [(38, 23), (50, 29), (40, 24)],
    PixelFormat.BGR8: [(37, 23), (51, 29), (40, 24)],
    PixelFormat.RGB8: [(37, 23), (51, 29), (40, 24)],
}


def pitches(fmt: PixelFormat) -> list[int]:
    (w0, _), (w1, _), (w2, _) = SIZES[fmt]
    return [min_stride(fmt, w0), -(-min_stride(fmt, w1) // 4) * 4 + 8, min_stride(fmt, w2)]


def random_frame(fmt: PixelFormat, width: int, height: int, stride: int, color: ColorSpec,
                 rng: np.random.Generator) -> Frame:
    """Random bytes everywhere (padding too): every tap of a wrong footprint shows up as a large error."""
    data = rng.integers(0, 256, stride * buffer_rows(fmt, height), dtype=np.uint8)
    return Frame(data, width, height, stride, fmt, color)


def camera(name: str, width: int, height: int, distortion: str, coeffs: tuple[float, ...]) -> CameraModel:
    f = 0.6 * width
    return CameraModel(name, width, height, f, f, (width - 1) / 2 + 0.7, (height - 1) / 2 - 0.4, distortion, coeffs)


def adversarial_table(width: int, height: int, rng: np.random.Generator) -> SimpleNamespace:
    """Entries on every edge and corner, exact rounding ties (k + 1/2 of a 1/32 step), just outside the
    frame, -1, NaN and huge values, plus random points inside."""
    n = NET_W * NET_H
    x = rng.uniform(0, width - 1, n).astype(np.float32)
    y = rng.uniform(0, height - 1, n).astype(np.float32)
    special = [
        (0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1), (width - 1, height / 2),
        (width / 3, height - 1), (0.5 / 32, 2.5 / 32), (3 + 1.5 / 32, 4 + 0.5 / 32), (width - 1 - 0.5 / 32, 1),
        (1, height - 1 - 0.5 / 32), (0.25, 0.25), (0.75, 0.75), (width - 1.25, height - 1.75),
        (-1e-3, 2), (2, -1e-3), (width - 1 + 1e-3, 2), (2, height - 1 + 1e-3), (-1, -1),
        (np.nan, 3), (3, np.nan), (1e30, 1e30), (-1e30, 5),
    ]
    for i, (sx, sy) in enumerate(special):
        x[i], y[i] = sx, sy
    return SimpleNamespace(map_x=x.reshape(NET_H, NET_W), map_y=y.reshape(NET_H, NET_W))


def rig_case(fmt: PixelFormat, color: ColorSpec, seed: int = 0) -> tuple[list[Frame], list]:
    """Three cameras of different sizes, pitches and calibrations (plumb_bob letterbox, fisheye crop,
    an adversarial table)."""
    rng = np.random.default_rng(seed)
    (w0, h0), (w1, h1), (w2, h2) = SIZES[fmt]
    tables = [
        build_remap(camera("a", w0, h0, "plumb_bob", (-0.3, 0.09, 0.001, -0.0005, -0.01)), NET_W, NET_H, "letterbox"),
        build_remap(camera("b", w1, h1, "equidistant", (0.02, -0.006, 0.001, -0.0002)), NET_W, NET_H, "crop"),
        adversarial_table(w2, h2, rng),
    ]
    frames = [random_frame(fmt, w, h, s, color, rng) for (w, h), s in zip(SIZES[fmt], pitches(fmt))]
    return frames, tables


def assert_matches_reference(out: np.ndarray, ref: np.ndarray) -> None:
    """docs/preprocess.md tolerance: 1e-3 absolute in float32, one float16 ulp in float16 (at least 1e-6:
    next to zero, float16 ulps are finer than float32 rounding differences between implementations)."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert np.isfinite(out).all(), "some output elements were not written (NaN poison survived)"
    err = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if out.dtype == np.float16:
        ulp = np.maximum(np.spacing(np.abs(ref)).astype(np.float64), 1e-6)
        worst = np.unravel_index(np.argmax(err - ulp), err.shape)
        assert (err <= ulp).all(), f"{err[worst]} > 1 ulp ({ulp[worst]}) at {worst}"
    else:
        assert err.max() <= 1e-3, f"max error {err.max()} at {np.unravel_index(err.argmax(), err.shape)}"


def shim(tables, dtype, **kwargs) -> CudaPreprocessor:
    """The GPU launcher with the CPU shim as its device."""
    return CudaPreprocessor(tables, NORM, dtype, backend="shim", **kwargs)


def run_poisoned(pre: CudaPreprocessor, frames: list[Frame]) -> np.ndarray:
    """Fill the device batch with NaN first, so that an element the kernels skip cannot pass."""
    nan = pre.gpu.pinned(pre.shape, pre.dtype)
    nan.fill(np.nan)
    pre.gpu.upload(pre.enqueue(frames).address, nan)  # queued after that run, before the next one
    pre.gpu.synchronize()
    return pre.run(frames).copy()


YUV_CASES = [(fmt, color) for fmt in (PixelFormat.NV12, PixelFormat.YUYV) for color in COLORS]
RGB_CASES = [(fmt, ColorSpec()) for fmt in (PixelFormat.BGR8, PixelFormat.RGB8)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("fmt", "color"), YUV_CASES + RGB_CASES,
                         ids=[f"{f.value}-{c.matrix.value}-{c.range.value}" for f, c in YUV_CASES + RGB_CASES])
def test_shim_matches_reference(fmt: PixelFormat, color: ColorSpec, dtype: type) -> None:
    frames, tables = rig_case(fmt, color)
    out = run_poisoned(shim(tables, dtype), frames)
    ref = preprocess_reference(frames, tables, NORM, dtype)
    assert_matches_reference(out, ref)
    # The case exercises sampled pixels on every camera, pad pixels on the letterboxed and adversarial ones.
    sampled = (ref != 0).any(axis=1)
    assert sampled.any(axis=(1, 2)).all() and not sampled[0].all() and not sampled[2].all()


def test_pad_pixels_are_exactly_zero() -> None:
    frames, tables = rig_case(PixelFormat.NV12, ColorSpec())
    out = run_poisoned(shim(tables, np.float32), frames)
    pad_counts = []
    for n, (frame, table) in enumerate(zip(frames, tables)):
        x, y = table.map_x, table.map_y
        with np.errstate(invalid="ignore"):
            pad = ~((x >= 0) & (x <= frame.width - 1) & (y >= 0) & (y <= frame.height - 1))
        assert (out[n][:, pad] == 0.0).all()
        assert (out[n][:, ~pad] != 0.0).any(axis=0).all()  # 0.0 on all 3 channels is not a sampled colour
        pad_counts.append(int(pad.sum()))
    assert pad_counts[0] > 0 and pad_counts[2] > 0  # letterbox bars; -1, NaN and out-of-frame entries


GEOMETRIES = [
    ((1, 1, 1), (1, 1, 1)),  # one thread does everything
    ((3, 2, 1), (7, 5, 1)),  # odd shapes, far fewer threads than pixels
    ((1, 1, 2), (64, 1, 1)),  # fewer z-slices than cameras
    ((5, 4, 3), (8, 4, 2)),  # threadIdx.z walks cameras too; more threads than cameras
    ((40, 30, 4), (32, 8, 1)),  # more blocks than pixels
]


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_results_do_not_depend_on_launch_geometry(fmt: PixelFormat) -> None:
    frames, tables = rig_case(fmt, ColorSpec(ColorMatrix.BT709, ColorRange.FULL), seed=3)
    for dtype in (np.float32, np.float16):
        expected = run_poisoned(shim(tables, dtype), frames)
        for grid, block in GEOMETRIES:
            got = run_poisoned(shim(tables, dtype, grid=grid, block=block), frames)
            np.testing.assert_array_equal(got, expected, err_msg=f"grid {grid} block {block}")


def test_mixed_formats_and_colours_in_one_batch() -> None:
    """A rig of different formats: one launch per format, every camera at its own batch index."""
    rng = np.random.default_rng(7)
    specs = [
        (PixelFormat.RGB8, ColorSpec(), 0), (PixelFormat.NV12, ColorSpec(ColorMatrix.BT709, ColorRange.FULL), 0),
        (PixelFormat.YUYV, ColorSpec(ColorMatrix.BT601, ColorRange.LIMITED), 1),
        (PixelFormat.NV12, ColorSpec(ColorMatrix.BT601, ColorRange.LIMITED), 2),
        (PixelFormat.BGR8, ColorSpec(), 1),
    ]
    frames, tables = [], []
    for fmt, color, k in specs:
        w, h = SIZES[fmt][k]
        frames.append(random_frame(fmt, w, h, pitches(fmt)[k], color, rng))
        tables.append(adversarial_table(w, h, rng))
    plan = plan_batch(frames, np.dtype(np.float32))
    assert [step.kernel for step in plan.launches] == [
        "preprocess_nv12_f32", "preprocess_yuyv_f32", "preprocess_bgr8_f32", "preprocess_rgb8_f32"]
    for dtype in (np.float32, np.float16):
        out = run_poisoned(shim(tables, dtype), frames)
        assert_matches_reference(out, preprocess_reference(frames, tables, NORM, dtype))


def test_repeated_runs_use_the_new_frames() -> None:
    frames_a, tables = rig_case(PixelFormat.YUYV, ColorSpec(), seed=1)
    frames_b, _ = rig_case(PixelFormat.YUYV, ColorSpec(), seed=2)
    pre = shim(tables, np.float32)
    first = run_poisoned(pre, frames_a)
    second = run_poisoned(pre, frames_b)
    assert_matches_reference(first, preprocess_reference(frames_a, tables, NORM, np.float32))
    assert_matches_reference(second, preprocess_reference(frames_b, tables, NORM, np.float32))
    assert not np.array_equal(first, second)


def test_wrong_frames_are_rejected_with_a_clear_error() -> None:
    frames, tables = rig_case(PixelFormat.NV12, ColorSpec())
    pre = shim(tables, np.float32)
    with pytest.raises(FrameError, match="2 frames for 3 cameras"):
        pre.run(frames[:2])
    swapped = [frames[1], frames[0], frames[2]]
    with pytest.raises(FrameError, match="camera 0: frame is 50x30 but its remap table was built for 38x22"):
        pre.run(swapped)


def test_low_level_launch_checks_its_arguments() -> None:
    out = np.zeros((1, 3, 4, 4), np.float32)
    records = np.zeros(0)
    with pytest.raises(KernelError, match="unknown kernel"):
        launch("preprocess_i420_f32", records, out, NORM, (1, 1, 1))
    with pytest.raises(KernelError, match="must be 3 positive ints"):
        launch("preprocess_nv12_f32", records, out, NORM, (1, 0, 1))
    with pytest.raises(KernelError, match="float16"):
        launch("preprocess_nv12_f16", records, out, NORM, (1, 1, 1))


def test_launcher_usage_errors() -> None:
    frames, tables = rig_case(PixelFormat.BGR8, ColorSpec())
    with pytest.raises(KernelError, match="unknown CUDA backend 'opencl'"):
        CudaPreprocessor(tables, NORM, backend="opencl")
    with pytest.raises(KernelError, match="launch\\(\\) before any upload"):
        shim(tables, np.float16).launch()
    pre = shim(tables, np.float16)
    device = pre.enqueue(frames)  # the device batch of the shim backend is host memory at that address
    assert device.shape == (3, 3, NET_H, NET_W) and device.dtype == np.float16 and device.address != 0


PLUGIN_NORM = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), value_range=255.0, color_order="BGR",
                            pad_value=114.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
def test_shim_matches_reference_with_bgr_0_255_and_a_pad_value(fmt: PixelFormat, dtype: type) -> None:
    """The plug-in detector options (YOLOX: BGR planes, 0-255 values, pad 114) on a top-left letterbox."""
    frames, tables = rig_case(fmt, ColorSpec(ColorMatrix.BT601, ColorRange.LIMITED), seed=5)
    (w0, h0) = SIZES[fmt][0]
    tables[0] = build_remap(camera("a", w0, h0, "plumb_bob", (-0.3, 0.09, 0.001, -0.0005, -0.01)), NET_W, NET_H,
                            "letterbox", align="top-left")
    pre = CudaPreprocessor(tables, PLUGIN_NORM, dtype, backend="shim")
    out = run_poisoned(pre, frames).astype(np.float32)
    ref = preprocess_reference(frames, tables, PLUGIN_NORM, dtype).astype(np.float32)
    # in 0..255 units: the float32 tolerance scales by 255; float16 ulps are relative, as before
    err = np.abs(out - ref)
    assert np.isfinite(out).all()
    assert err.max() <= (255e-3 if dtype == np.float32 else 0.125 + 1e-3), err.max()
    pad = ~tables[0].valid
    assert pad[-1].all() and not pad[0].any()  # top-left: the bars are at the bottom
    assert (out[0][:, pad] == 114.0).all()
    # BGR planes: a pure-red BGR8 frame gives 255 in plane 2 only
    if fmt is PixelFormat.BGR8:
        red = [Frame.from_bgr(np.tile(np.array([0, 0, 255], np.uint8), (h, w, 1))) for w, h in SIZES[fmt]]
        got = pre.run(red)[0][:, ~pad].astype(np.float32)
        assert (got[2] == 255.0).all() and (got[:2] == 0.0).all()
