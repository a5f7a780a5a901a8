"""Preprocessing (docs/preprocess.md): the numpy reference against hand-computed numbers, the fast CPU
path against the reference, and the input checks of both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from calib.defaults import default_rig
from calib.remap import build_remap
from perception.errors import CalibrationError, ConfigError, FrameError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat, buffer_rows, min_stride
from perception.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FastPreprocessor,
    Normalization,
    normalization_affine,
    preprocess_reference,
    yuv_to_rgb_coefficients,
)

IDENTITY = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # out = value / 255
ALL_COLORS = [ColorSpec(m, r) for m in ColorMatrix for r in ColorRange]


class Size(NamedTuple):
    width: int
    height: int


@dataclass
class Maps:
    """The minimal remap table: maps only, or maps + the source size they were built for."""

    map_x: np.ndarray
    map_y: np.ndarray
    source_camera: Size | None = None


def random_frame(rng: np.random.Generator, fmt: PixelFormat, width: int, height: int, pad: int = 0,
                 color: ColorSpec = ColorSpec()) -> Frame:
    """Random bytes everywhere, row padding included (so reading padding shows up as a mismatch)."""
    stride = min_stride(fmt, width) + pad
    data = rng.integers(0, 256, stride * buffer_rows(fmt, height), dtype=np.uint8)
    return Frame(data, width, height, stride, fmt, color)


def random_maps(rng: np.random.Generator, src_w: int, src_h: int, net_h: int, net_w: int) -> Maps:
    """Coordinates over and around the source, plus the awkward entries: pad, NaN, edges, rounding ties."""
    map_x = rng.uniform(-2.0, src_w + 1.0, (net_h, net_w)).astype(np.float32)
    map_y = rng.uniform(-2.0, src_h + 1.0, (net_h, net_w)).astype(np.float32)
    map_x[0, :4] = [0.0, src_w - 1, 0.0, src_w - 1]  # corners: valid, every clamp engaged
    map_y[0, :4] = [0.0, 0.0, src_h - 1, src_h - 1]
    ties = (np.arange(net_w, dtype=np.float32) % (src_w - 2)) + np.float32(1 / 64)  # x * 32 ends in .5
    map_x[1], map_y[1] = ties, np.float32(src_h / 2 + 3 / 64)
    map_x[2, ::3] = map_y[2, ::3] = -1.0  # pad
    map_x[3, ::5] = np.nan
    return Maps(map_x, map_y)


def poisoned(pre: FastPreprocessor) -> FastPreprocessor:
    pre.output[...] = np.nan
    return pre


# --- the reference against numbers worked out by hand ------------------------------------------------

def rgb_ramp_frame() -> Frame:
    """4x4 RGB8: R = 10 j + i, G = i j, B = i^2 (column i, row j)."""
    j, i = np.mgrid[0:4, 0:4]
    image = np.stack([10 * j + i, i * j, i * i], axis=2).astype(np.uint8)
    return Frame(image.reshape(-1), 4, 4, 12, PixelFormat.RGB8)


def sample_points(frame: Frame, points: list[tuple[float, float]], norm: Normalization = IDENTITY) -> np.ndarray:
    """Reference output at source points (x, y) -> [3, len(points)], in 0..255 units for IDENTITY."""
    xy = np.asarray(points, np.float32)
    table = Maps(xy[None, :, 0].copy(), xy[None, :, 1].copy())
    return preprocess_reference([frame], [table], norm)[0, :, 0, :] * 255


def test_reference_bilinear_by_hand() -> None:
    out = sample_points(rgb_ramp_frame(), [(1.25, 2.5), (0.0, 0.0), (3.0, 3.0), (2.0, 1.0)])
    # (1.25, 2.5): R = 10*2.5 + 1.25; G = 1.25*2.5 (bilinear is exact on x*y); B between 1 and 4 at 1/4
    expected = np.array([[26.25, 0.0, 33.0, 12.0], [3.125, 0.0, 9.0, 2.0], [1.75, 0.0, 9.0, 4.0]])
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_reference_quantises_to_1_32_pixel_half_even() -> None:
    # x*32 = 32.5 -> 32 (tie to even), 33.5 -> 34, 32.32 -> 32, 32.7 -> 33; y = 0 so R = x's column value
    out = sample_points(rgb_ramp_frame(), [(1 + 1 / 64, 0), (1 + 3 / 64, 0), (1.01, 0), (1.0 + 0.7 / 32, 0)])
    np.testing.assert_allclose(out[0], [1.0, 1.0 + 2 / 32, 1.0, 1.0 + 1 / 32], atol=1e-4)


def test_reference_yuv_colours_by_hand() -> None:
    def nv12(y: int, u: int, v: int, color: ColorSpec) -> Frame:
        data = np.concatenate([np.full(16, y), np.tile([u, v], 4)]).astype(np.uint8)
        return Frame(data, 4, 4, 4, PixelFormat.NV12, color)

    bt601_limited = ColorSpec(ColorMatrix.BT601, ColorRange.LIMITED)
    white = sample_points(nv12(235, 128, 128, bt601_limited), [(1.5, 1.5)])[:, 0]
    black = sample_points(nv12(16, 128, 128, bt601_limited), [(1.5, 1.5)])[:, 0]
    np.testing.assert_allclose(white, [255, 255, 255], atol=1e-3)
    np.testing.assert_allclose(black, [0, 0, 0], atol=1e-3)
    # BT.601 limited (120, 100, 150): Y' = 104 * 255/219, Pb = -28 * 255/224, Pr = 22 * 255/224 (no clamp)
    yp, pb, pr = 104 * 255 / 219, -28 * 255 / 224, 22 * 255 / 224
    colour = sample_points(nv12(120, 100, 150, bt601_limited), [(1.5, 1.5)])[:, 0]
    np.testing.assert_allclose(
        colour, [yp + 1.402 * pr, yp - 0.344136 * pb - 0.714136 * pr, yp + 1.772 * pb], atol=2e-3)
    # BT.709 full range: no offsets, Kr = 0.2126, Kb = 0.0722; B = 60 + 1.8556 * 40 = 134.224 (no clamp)
    full709 = sample_points(nv12(60, 168, 100, ColorSpec(ColorMatrix.BT709, ColorRange.FULL)), [(2.0, 2.0)])[:, 0]
    np.testing.assert_allclose(
        full709, [np.clip(60 + 1.5748 * -28, 0, 255), 60 - 0.187324 * 40 - 0.468124 * -28, 134.224], atol=2e-3)
    # clamping: Y = 255, V = 255 full range pushes R far above 255
    assert sample_points(nv12(255, 128, 255, ColorSpec(range=ColorRange.FULL)), [(0, 0)])[0, 0] == 255


def test_reference_chroma_siting_by_hand() -> None:
    """U on its plane = 100 + 20 j + 8 i (chroma column i, row j); BT.601 full range with Y = V = 128
    makes B = 128 + 1.772 (U - 128), so U can be read back from the blue channel."""
    full = ColorSpec(ColorMatrix.BT601, ColorRange.FULL)
    points = [(2.0, 0.5), (2.0, 1.5), (1.0, 2.5), (0.0, 0.0), (7.0, 3.0)]

    def u_at(frame: Frame) -> np.ndarray:
        return (sample_points(frame, points)[2] - 128) / 1.772 + 128

    # NV12 8x4: chroma 4x2 at luma (2i, 2j + 0.5): cx = x/2, cy = (y - 0.5)/2, edges replicated
    jj, ii = np.mgrid[0:2, 0:4]
    uv = np.stack([100 + 20 * jj + 8 * ii, np.full_like(ii, 128)], axis=2).reshape(2, 8)
    nv12 = np.concatenate([np.full((4, 8), 128), uv]).astype(np.uint8)
    expected_nv12 = [108, 118, 124, 100, 100 + 20 * 1 + 8 * 3]  # (7, 3): cx = 3.5 -> column 3 replicated
    nv12_frame = Frame(nv12.reshape(-1), 8, 4, 8, PixelFormat.NV12, full)
    np.testing.assert_allclose(u_at(nv12_frame), expected_nv12, atol=5e-3)

    # YUYV 8x4: chroma 4x4 at luma (2i, j): cx = x/2, cy = y
    jj, ii = np.mgrid[0:4, 0:4]
    yuyv = np.stack([np.full_like(ii, 128), 100 + 20 * jj + 8 * ii, np.full_like(ii, 128), np.full_like(ii, 128)],
                    axis=2).reshape(4, 16).astype(np.uint8)
    expected_yuyv = [100 + 10 + 8, 100 + 30 + 8, 100 + 50 + 4, 100, 100 + 60 + 24]
    yuyv_frame = Frame(yuyv.reshape(-1), 8, 4, 16, PixelFormat.YUYV, full)
    np.testing.assert_allclose(u_at(yuyv_frame), expected_yuyv, atol=5e-3)


def test_reference_normalises_and_pads() -> None:
    norm = Normalization(mean=(0.5, 0.25, 0.1), std=(0.5, 0.25, 2.0))
    out = sample_points(rgb_ramp_frame(), [(3.0, 3.0), (-1.0, -1.0), (3.001, 1.0), (np.nan, 1.0)], norm) / 255
    # (3, 3): R = 33, G = 9, B = 9 -> (v/255 - mean)/std
    np.testing.assert_allclose(out[:, 0], [(33 / 255 - 0.5) / 0.5, (9 / 255 - 0.25) / 0.25, (9 / 255 - 0.1) / 2.0],
                               atol=1e-6)
    assert np.all(out[:, 1:] == 0.0)


def test_colour_coefficients_match_the_textbook() -> None:
    k601 = yuv_to_rgb_coefficients(ColorSpec(ColorMatrix.BT601, ColorRange.LIMITED))
    np.testing.assert_allclose([k601.r_v, k601.g_u, k601.g_v, k601.b_u], [1.402, -0.344136, -0.714136, 1.772],
                               atol=1e-6)
    assert (k601.y_offset, k601.y_scale, k601.c_scale) == (16, np.float32(255 / 219), np.float32(255 / 224))
    k709 = yuv_to_rgb_coefficients(ColorSpec(ColorMatrix.BT709, ColorRange.FULL))
    np.testing.assert_allclose([k709.r_v, k709.g_u, k709.g_v, k709.b_u], [1.5748, -0.187324, -0.468124, 1.8556],
                               atol=1e-6)
    assert (k709.y_offset, k709.y_scale, k709.c_scale) == (0, 1, 1)
    assert all(isinstance(v, np.float32) for v in k709)


def test_normalization_affine() -> None:
    norm = Normalization()
    assert (norm.mean, norm.std) == (IMAGENET_MEAN, IMAGENET_STD)
    a, b = normalization_affine(norm)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, 1 / (255 * np.array(IMAGENET_STD)), rtol=1e-7)
    np.testing.assert_allclose(b, -np.array(IMAGENET_MEAN) / np.array(IMAGENET_STD), rtol=1e-7)
    assert Normalization(mean=[0, 0, 0], std=np.ones(3)).std == (1.0, 1.0, 1.0)


# --- fast path against the reference ----------------------------------------------------------------

@pytest.mark.parametrize("color", ALL_COLORS, ids=lambda c: f"{c.matrix.value}-{c.range.value}")
@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
def test_fast_matches_reference(fmt: PixelFormat, color: ColorSpec) -> None:
    """Two cameras of different sizes and maps, padded rows, odd output size, every element written."""
    rng = np.random.default_rng(7)
    frames = [random_frame(rng, fmt, 64, 48, pad=6, color=color), random_frame(rng, fmt, 50, 30, pad=2, color=color)]
    tables = [random_maps(rng, 64, 48, 23, 37), random_maps(rng, 50, 30, 23, 37)]
    norm = Normalization(mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    expected = preprocess_reference(frames, tables, norm)
    out = poisoned(FastPreprocessor(tables, norm)).run(frames)
    assert out.shape == (2, 3, 23, 37) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, atol=1e-3, rtol=0)
    pad = np.isnan(tables[0].map_x) | (tables[0].map_x == -1)
    assert np.all(out[0][:, pad] == 0.0) and np.all(expected[0][:, pad] == 0.0)


@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
def test_fast_float16_within_one_ulp(fmt: PixelFormat) -> None:
    rng = np.random.default_rng(11)
    frames = [random_frame(rng, fmt, 40, 26, pad=4, color=ColorSpec(ColorMatrix.BT709))]
    tables = [random_maps(rng, 40, 26, 17, 31)]
    expected = preprocess_reference(frames, tables, dtype=np.float16)
    np.testing.assert_array_equal(expected, preprocess_reference(frames, tables).astype(np.float16))
    out = poisoned(FastPreprocessor(tables, dtype=np.float16)).run(frames)
    assert out.dtype == np.float16 and np.isfinite(out).all()
    # one float16 step, plus the float32 differences that show near zero where float16 steps are finer
    tolerance = np.spacing(np.abs(expected)).astype(np.float32) + 1e-5
    assert np.all(np.abs(out.astype(np.float32) - expected) <= tolerance)


@pytest.mark.parametrize("mode", ["letterbox", "crop"])
def test_fast_matches_reference_on_calibrated_rig(mode: str) -> None:
    """The real composite tables of the default rig (strong distortion, letterbox bars) on 1080p NV12."""
    rng = np.random.default_rng(3)
    tables = [build_remap(camera, 96, 72, mode) for camera in default_rig(3).cameras]
    frames = [random_frame(rng, PixelFormat.NV12, 1920, 1080) for _ in tables]
    expected = preprocess_reference(frames, tables)
    out = poisoned(FastPreprocessor(tables)).run(frames)
    np.testing.assert_allclose(out, expected, atol=1e-3, rtol=0)
    for n, table in enumerate(tables):
        assert np.all(out[n][:, ~table.valid] == 0.0)
    if mode == "letterbox":
        assert not tables[0].valid[0].any()  # 16:9 into 4:3 leaves bars that must be padded


def smooth_maps(src_w: int, src_h: int, net_h: int, net_w: int, transposed: bool = False) -> Maps:
    """A letterbox-like table: the top 36 rows pad, the rest sweeping the whole source with a wobble,
    edges included. Transposed, output rows run along source columns (a camera mounted sideways)."""
    v, u = np.mgrid[0:net_h, 0:net_w].astype(np.float64)
    along = (v - 36) / (net_h - 37)  # 0 .. 1 over the non-pad rows
    across = u / (net_w - 1)
    wobble = 0.03 * np.sin(7 * across) * np.sin(3 * along * np.pi)
    y = np.clip(along + wobble, 0, 1) * (src_h - 1)
    x = across * (src_w - 1)
    if transposed:
        x, y = along * (src_w - 1), np.clip(across + wobble, 0, 1) * (src_h - 1)
    pad = v < 36
    return Maps(np.where(pad, -1, x).astype(np.float32), np.where(pad, -1, y).astype(np.float32))


@pytest.mark.parametrize("transposed", [False, True], ids=["row-bands", "one-band"])
@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
def test_fast_matches_reference_on_smooth_tables(fmt: PixelFormat, transposed: bool) -> None:
    """Smooth tables let the fast path widen and sample the source band by band of output rows (all-pad
    bands skipped); sideways tables make every band need every source row, so it samples in one band."""
    rng = np.random.default_rng(13)
    tables = [smooth_maps(120, 80, 90, 100, transposed)]
    frames = [random_frame(rng, fmt, 120, 80, pad=4)]
    pre = poisoned(FastPreprocessor(tables))
    out = pre.run(frames)
    np.testing.assert_allclose(out, preprocess_reference(frames, tables), atol=1e-3, rtol=0)
    assert np.all(out[0, :, :36] == 0.0)
    bands = pre._plans[0].luma.bands  # white-box: make sure both sampling layouts stay covered
    assert len(bands) == 1 if transposed else (len(bands) == 2 and bands[0].src_start == 0)


@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
def test_all_pad_table_gives_zeros(fmt: PixelFormat) -> None:
    pad = Maps(np.full((5, 7), -1, np.float32), np.full((5, 7), -1, np.float32))
    frames = [random_frame(np.random.default_rng(4), fmt, 16, 8)]
    for dtype in (np.float32, np.float16):
        assert np.all(poisoned(FastPreprocessor([pad], dtype=dtype)).run(frames) == 0.0)
        assert np.all(preprocess_reference(frames, [pad], dtype=dtype) == 0.0)


def test_fast_reuses_its_buffer_and_follows_changing_inputs() -> None:
    """Same output array every call; formats, colours and (for tables without a source size) frame sizes
    may change between calls."""
    rng = np.random.default_rng(5)
    tables = [random_maps(rng, 32, 24, 9, 13), random_maps(rng, 32, 24, 9, 13)]
    pre = FastPreprocessor(tables)
    first = pre.run([random_frame(rng, PixelFormat.NV12, 32, 24), random_frame(rng, PixelFormat.BGR8, 32, 24)])
    for frames in (
        [random_frame(rng, PixelFormat.YUYV, 32, 24, color=ColorSpec(ColorMatrix.BT709)),
         random_frame(rng, PixelFormat.NV12, 32, 24, pad=8, color=ColorSpec(range=ColorRange.FULL))],
        [random_frame(rng, PixelFormat.RGB8, 20, 30), random_frame(rng, PixelFormat.NV12, 40, 16)],
    ):
        out = pre.run(frames)
        assert out is first
        np.testing.assert_allclose(out, preprocess_reference(frames, tables), atol=1e-3, rtol=0)


def test_fast_is_deterministic_across_thread_counts() -> None:
    rng = np.random.default_rng(9)
    tables = [random_maps(rng, 640, 360, 96, 160)]
    frames = [random_frame(rng, PixelFormat.NV12, 640, 360)]
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        single = FastPreprocessor(tables).run(frames).copy()
        cv2.setNumThreads(max(threads, 2))
        multi = FastPreprocessor(tables).run(frames)
    finally:
        cv2.setNumThreads(threads)
    np.testing.assert_array_equal(single, multi)


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"mean": (0.5, 0.5)}, "3 values"),
    ({"mean": (0.5, np.nan, 0.5)}, "finite"),
    ({"std": (0.2, 0.0, 0.2)}, "> 0"),
    ({"std": (0.2, -1.0, 0.2)}, "> 0"),
    ({"std": "abc"}, "3 numbers"),
    ({"mean": (0.5, None, 0.5)}, "3 numbers"),
])
def test_normalization_rejects_bad_values(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Normalization(**kwargs)


@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_bad_inputs_give_clear_errors(implementation: str) -> None:
    rng = np.random.default_rng(1)

    def run(frames: list, tables: list, dtype: object = np.float32) -> None:
        if implementation == "reference":
            preprocess_reference(frames, tables, dtype=dtype)
        else:
            FastPreprocessor(tables, dtype=dtype).run(frames)

    good = random_maps(rng, 32, 24, 8, 10)
    frame = random_frame(rng, PixelFormat.NV12, 32, 24)
    with pytest.raises(ConfigError, match="float32 or float16"):
        run([frame], [good], np.float64)
    with pytest.raises(CalibrationError, match="at least one"):
        run([], [])
    with pytest.raises(CalibrationError, match="camera 1: map_y must be a non-empty 2-D float32"):
        run([frame, frame], [good, Maps(good.map_x, good.map_y.astype(np.float64))])
    with pytest.raises(CalibrationError, match="camera 0: map_x .* and map_y .* differ"):
        run([frame], [Maps(good.map_x, good.map_y[:, :5].copy())])
    with pytest.raises(CalibrationError, match="camera 1 is 5x8 but camera 0's is 10x8"):
        run([frame, frame], [good, Maps(good.map_x[:, :5].copy(), good.map_y[:, :5].copy())])
    with pytest.raises(FrameError, match="got 1 frames for 2 cameras"):
        run([frame], [good, good])
    with pytest.raises(FrameError, match="camera 1: expected a perception.frame.Frame, got ndarray"):
        run([frame, np.zeros((24, 32), np.uint8)], [good, good])
    sized = Maps(good.map_x, good.map_y, Size(32, 24))
    with pytest.raises(FrameError, match="camera 1: frame is 64x48 but its remap table was built for 32x24"):
        run([frame, random_frame(rng, PixelFormat.BGR8, 64, 48)], [sized, sized])
    with pytest.raises(FrameError, match="camera 0: frame is 4x4 but"):
        run([rgb_ramp_frame()], [Maps(good.map_x, good.map_y, Size(32, 24))])


def test_fast_path_rejects_sources_beyond_opencv_limits() -> None:
    wide = random_frame(np.random.default_rng(2), PixelFormat.NV12, 32768, 2)
    maps = Maps(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(FrameError, match="camera 0: source is 32768x2; the OpenCV path samples sources of at most"):
        FastPreprocessor([maps]).run([wide])


# --- plug-in detector options: BGR planes, 0-255 values, a pad colour, top-left letterbox ---------------

YOLOX_NORM = Normalization(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), value_range=255.0, color_order="BGR",
                           pad_value=114.0)


def test_reference_bgr_0_255_and_pad_value_by_hand() -> None:
    out = sample_points(rgb_ramp_frame(), [(3.0, 3.0), (-1.0, -1.0)], YOLOX_NORM) / 255
    # (3, 3): R = 33, G = 9, B = 9, written B, G, R in 0..255; pad: 114 on every plane
    np.testing.assert_array_equal(out[:, 0], [9.0, 9.0, 33.0])
    np.testing.assert_array_equal(out[:, 1], [114.0, 114.0, 114.0])
    norm = Normalization(mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), value_range=255.0, color_order="BGR",
                         pad_value=50.0)
    out = sample_points(rgb_ramp_frame(), [(3.0, 3.0), (-1.0, -1.0)], norm) / 255
    np.testing.assert_allclose(out[:, 0], [(9 - 10) / 2, (9 - 20) / 4, (33 - 30) / 5], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], [(50 - 10) / 2, (50 - 20) / 4, (50 - 30) / 5], atol=1e-6)


def test_yolox_input_equals_yolox_preprocessing_on_a_top_left_letterbox() -> None:
    """Megvii YOLOX's preproc (cv2.resize + 114 pad at the top-left) and the contract agree up to the
    bilinear weights' 1/32 quantisation, exactly in the bars."""
    from perception.io.drive_common import default_camera

    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.integers(0, 256, (54, 96, 3), dtype=np.uint8), (9, 9), 3)
    table = build_remap(default_camera("c", 96, 54), 64, 64, "letterbox", align="top-left")
    ours = FastPreprocessor([table], YOLOX_NORM).run([Frame.from_bgr(image)])[0]
    resized = cv2.resize(image, (64, 36), interpolation=cv2.INTER_LINEAR)
    theirs = np.full((64, 64, 3), 114, np.uint8)
    theirs[:36] = resized
    theirs = theirs.transpose(2, 0, 1).astype(np.float32)
    assert table.valid[:36].all() and not table.valid[36:].any()
    np.testing.assert_array_equal(ours[:, 36:], theirs[:, 36:])
    assert np.abs(ours[:, :36] - theirs[:, :36]).max() <= 2.0


@pytest.mark.parametrize("fmt", list(PixelFormat), ids=lambda f: f.value)
@pytest.mark.parametrize("norm", [YOLOX_NORM, Normalization((0.4, 0.5, 0.6), (0.2, 0.3, 0.25), 1.0, "BGR", 30.0),
                                  Normalization((100.0, 50.0, 0.0), (50.0, 60.0, 70.0), 255.0, "RGB", None)],
                         ids=["yolox", "bgr-unit-pad", "rgb-255"])
def test_fast_matches_reference_with_plugin_options(fmt: PixelFormat, norm: Normalization) -> None:
    rng = np.random.default_rng(11)
    frames = [random_frame(rng, fmt, 64, 48, pad=6), random_frame(rng, fmt, 50, 30, pad=2)]
    tables = [random_maps(rng, 64, 48, 23, 37), random_maps(rng, 50, 30, 23, 37)]
    expected = preprocess_reference(frames, tables, norm)
    out = poisoned(FastPreprocessor(tables, norm)).run(frames)
    # docs/preprocess.md: 1e-3 x value_range / min(1, min std)
    np.testing.assert_allclose(out, expected, atol=1e-3 * norm.value_range / min(1.0, *norm.std), rtol=0)
    pad = np.isnan(tables[0].map_x) | (tables[0].map_x == -1)
    from perception.preprocess.common import pad_output

    want_pad = pad_output(norm)[list(np.argsort(norm.rgb_planes))]
    assert np.all(out[0][:, pad] == want_pad[:, None]) and np.all(expected[0][:, pad] == want_pad[:, None])


def test_normalization_rejects_bad_plugin_options() -> None:
    for kwargs, words in [({"value_range": 100.0}, "value_range"), ({"color_order": "GBR"}, "color_order"),
                          ({"pad_value": 300.0}, "pad_value"), ({"pad_value": "grey"}, "pad_value")]:
        with pytest.raises(ConfigError, match=words):
            Normalization(**kwargs)
