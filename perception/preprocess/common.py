"""Pieces every preprocessing implementation shares: normalisation, colour coefficients, input checks.

The numbers here are the ones docs/preprocess.md defines; the numpy reference, the CPU fast path and the
CUDA launcher all take them from these functions so that they cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence

import numpy as np

from perception.errors import CalibrationError, ConfigError, FrameError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OUTPUT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


COLOR_ORDERS = ("RGB", "BGR")
VALUE_RANGES = (1.0, 255.0)


@dataclass(frozen=True)
class Normalization:
    """How sampled colours (0..255) become network input: scaled to 0..`value_range`, then per output
    channel `(value - mean) / std`, written in `color_order`; letterbox pad pixels are `pad_value`
    (source pixel units, 0..255) normalised the same way, or 0.0 (the mean colour) when None.
    `mean` and `std` are in output channel order."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    value_range: float = 1.0
    color_order: str = "RGB"
    pad_value: float | None = None

    def __post_init__(self) -> None:
        for field in ("mean", "std"):
            values = getattr(self, field)
            try:
                if isinstance(values, (str, bytes)):
                    raise TypeError
                values = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise ConfigError(f"normalization {field} must be 3 numbers, got {values!r}") from None
            if len(values) != 3:
                raise ConfigError(f"normalization {field} must have 3 values (one per channel), got {len(values)}")
            if not all(math.isfinite(v) for v in values):
                raise ConfigError(f"normalization {field} must be finite, got {values}")
            object.__setattr__(self, field, values)
        if not all(s > 0 for s in self.std):
            raise ConfigError(f"normalization std must be > 0 on every channel, got {self.std}")
        if self.value_range not in VALUE_RANGES:
            raise ConfigError(f"normalization value_range must be 1 or 255, got {self.value_range!r}")
        if self.color_order not in COLOR_ORDERS:
            raise ConfigError(f"normalization color_order must be one of {list(COLOR_ORDERS)}, got {self.color_order!r}")
        if self.pad_value is not None and not (isinstance(self.pad_value, (int, float))
                                               and 0.0 <= self.pad_value <= 255.0):
            raise ConfigError(f"normalization pad_value must be in 0..255 or None, got {self.pad_value!r}")

    @property
    def rgb_planes(self) -> tuple[int, int, int]:
        """Output plane of the R, G and B samples."""
        return (0, 1, 2) if self.color_order == "RGB" else (2, 1, 0)


def normalization_affine(norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """`(a, b)`, float32 [3] each in **RGB order**, with `out = value * a + b` for values in 0..255:
    a = 1 / ((255 / value_range) std), b = -mean / std (mean, std of the plane each colour goes to)."""
    planes = list(norm.rgb_planes)
    std = np.asarray(norm.std, np.float64)[planes]
    mean = np.asarray(norm.mean, np.float64)[planes]
    return (1.0 / ((255.0 / norm.value_range) * std)).astype(np.float32), (-mean / std).astype(np.float32)


def pad_output(norm: Normalization) -> np.ndarray:
    """float32 [3], RGB order: what pad pixels (invalid table entries) hold, `pad * a + b` in float32."""
    if norm.pad_value is None:
        return np.zeros(3, np.float32)
    a, b = normalization_affine(norm)
    return np.float32(norm.pad_value) * a + b


class YuvCoefficients(NamedTuple):
    """YUV -> RGB in 0..255 units, float32, signed so that every term is an addition:

    Y' = (Y - y_offset) * y_scale;  Pb = (U - 128) * c_scale;  Pr = (V - 128) * c_scale
    R = Y' + r_v Pr;   G = Y' + g_u Pb + g_v Pr;   B = Y' + b_u Pb      (g_u, g_v are negative)
    """

    y_offset: np.float32
    y_scale: np.float32
    c_scale: np.float32
    r_v: np.float32
    g_u: np.float32
    g_v: np.float32
    b_u: np.float32


_KR_KB = {ColorMatrix.BT601: (0.299, 0.114), ColorMatrix.BT709: (0.2126, 0.0722)}


def yuv_to_rgb_coefficients(color: ColorSpec) -> YuvCoefficients:
    """The colour-conversion constants of docs/preprocess.md, computed in float64, rounded to float32."""
    kr, kb = _KR_KB[ColorMatrix(color.matrix)]
    kg = 1.0 - kr - kb
    if ColorRange(color.range) is ColorRange.LIMITED:
        y_offset, y_scale, c_scale = 16.0, 255.0 / 219.0, 255.0 / 224.0
    else:
        y_offset, y_scale, c_scale = 0.0, 1.0, 1.0
    values = (
        y_offset,
        y_scale,
        c_scale,
        2.0 * (1.0 - kr),
        -2.0 * kb * (1.0 - kb) / kg,
        -2.0 * kr * (1.0 - kr) / kg,
        2.0 * (1.0 - kb),
    )
    return YuvCoefficients(*(np.float32(v) for v in values))


class SourceSize(Protocol):
    width: int
    height: int


class RemapMaps(Protocol):
    """What preprocessing needs from a remap table (calib.remap.RemapTable satisfies it).

    `map_x`, `map_y`: float32 [H_net, W_net], source coordinates sampled per output pixel (-1 = pad).
    A table may also carry `source_camera` (anything with `width`, `height`): the frame size it expects.
    """

    map_x: np.ndarray
    map_y: np.ndarray


def expected_source_size(table: RemapMaps) -> tuple[int, int] | None:
    """(width, height) of the frames this table was built for, when the table says so."""
    camera = getattr(table, "source_camera", None)
    if camera is None:
        return None
    return int(camera.width), int(camera.height)


def check_output_dtype(dtype: object) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"preprocessing output dtype must be float32 or float16, got {dtype!r}") from None
    if resolved not in OUTPUT_DTYPES:
        raise ConfigError(f"preprocessing output dtype must be float32 or float16, got {resolved}")
    return resolved


def check_tables(tables: Sequence[RemapMaps]) -> tuple[int, int]:
    """Validate the remap tables; returns the common network input size (height, width)."""
    if len(tables) == 0:
        raise CalibrationError("preprocessing needs at least one remap table (one per camera)")
    shape = None
    for n, table in enumerate(tables):
        for name in ("map_x", "map_y"):
            m = getattr(table, name, None)
            if not isinstance(m, np.ndarray):
                raise CalibrationError(f"remap table of camera {n}: {name} is missing or not a numpy array")
            if m.dtype != np.float32 or m.ndim != 2 or m.size == 0:
                raise CalibrationError(
                    f"remap table of camera {n}: {name} must be a non-empty 2-D float32 array, "
                    f"got {m.dtype} {m.shape}"
                )
        if table.map_x.shape != table.map_y.shape:
            raise CalibrationError(
                f"remap table of camera {n}: map_x {table.map_x.shape} and map_y {table.map_y.shape} differ"
            )
        if shape is None:
            shape = table.map_x.shape
        elif table.map_x.shape != shape:
            raise CalibrationError(
                f"remap table of camera {n} is {table.map_x.shape[1]}x{table.map_x.shape[0]} but camera 0's "
                f"is {shape[1]}x{shape[0]}: every camera must map to the same network input size"
            )
    assert shape is not None
    return int(shape[0]), int(shape[1])


def check_frames(frames: Sequence[Frame], tables: Sequence[RemapMaps]) -> None:
    """Every camera has a Frame of the size its table expects."""
    if len(frames) != len(tables):
        raise FrameError(f"got {len(frames)} frames for {len(tables)} cameras (one remap table per camera)")
    for n, (frame, table) in enumerate(zip(frames, tables)):
        if not isinstance(frame, Frame):
            raise FrameError(f"camera {n}: expected a perception.frame.Frame, got {type(frame).__name__}")
        expected = expected_source_size(table)
        if expected is not None and (frame.width, frame.height) != expected:
            raise FrameError(
                f"camera {n}: frame is {frame.width}x{frame.height} but its remap table was built for "
                f"{expected[0]}x{expected[1]}"
            )


def valid_entries(map_x: np.ndarray, map_y: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boolean [H, W]: table entries inside the source image (`0 <= x <= W-1`, `0 <= y <= H-1`; NaN is not)."""
    return (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)


def chroma_coordinates(pixel_format: PixelFormat, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where luma coordinates (x, y) fall on the chroma plane, in float32 (exact for table-sized values).

    NV12: chroma (i, j) sits at luma (2i, 2j + 0.5); YUYV: at luma (2i, j).
    """
    half = np.float32(0.5)
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    if pixel_format is PixelFormat.NV12:
        return x * half, (y - half) * half
    if pixel_format is PixelFormat.YUYV:
        return x * half, y.copy()
    raise ValueError(f"{pixel_format.value} has no chroma planes")
