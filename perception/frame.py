"""Raw camera frames: a pixel buffer plus the format, size and row pitch that describe it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from perception.errors import FrameError


class PixelFormat(str, enum.Enum):
    NV12 = "nv12"  # Y plane (height rows of `stride` bytes) then interleaved UV plane (height/2 rows)
    YUYV = "yuyv"  # packed 4:2:2, bytes Y0 U0 Y1 V0 per pixel pair
    BGR8 = "bgr8"
    RGB8 = "rgb8"


class ColorMatrix(str, enum.Enum):
    BT601 = "bt601"
    BT709 = "bt709"


class ColorRange(str, enum.Enum):
    LIMITED = "limited"  # Y in [16, 235], chroma in [16, 240]
    FULL = "full"


@dataclass(frozen=True)
class ColorSpec:
    matrix: ColorMatrix = ColorMatrix.BT601
    range: ColorRange = ColorRange.LIMITED


def min_stride(pixel_format: PixelFormat, width: int) -> int:
    """Smallest legal row pitch in bytes."""
    if pixel_format is PixelFormat.NV12:
        return width
    if pixel_format is PixelFormat.YUYV:
        return 2 * width
    return 3 * width


def buffer_rows(pixel_format: PixelFormat, height: int) -> int:
    """Rows of `stride` bytes the buffer holds (NV12 adds height/2 chroma rows)."""
    return height + height // 2 if pixel_format is PixelFormat.NV12 else height


@dataclass(frozen=True)
class Frame:
    """One image as it arrives from a camera, before any conversion.

    `data` is a uint8 array whose bytes, read row-major, are `buffer_rows(...)` rows of `stride` bytes.
    """

    data: np.ndarray
    width: int
    height: int
    stride: int
    pixel_format: PixelFormat
    color: ColorSpec = ColorSpec()

    def __post_init__(self) -> None:
        fmt = PixelFormat(self.pixel_format)
        object.__setattr__(self, "pixel_format", fmt)
        if self.width <= 0 or self.height <= 0:
            raise FrameError(f"frame size must be positive, got {self.width}x{self.height}")
        if fmt in (PixelFormat.NV12, PixelFormat.YUYV) and self.width % 2:
            raise FrameError(f"{fmt.value} needs an even width, got {self.width}")
        if fmt is PixelFormat.NV12 and self.height % 2:
            raise FrameError(f"nv12 needs an even height, got {self.height}")
        if self.stride < min_stride(fmt, self.width):
            raise FrameError(
                f"{fmt.value} {self.width}x{self.height}: stride {self.stride} is below the minimum "
                f"{min_stride(fmt, self.width)} bytes"
            )
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.uint8:
            raise FrameError("frame data must be a numpy uint8 array")
        need = self.stride * buffer_rows(fmt, self.height)
        if self.data.size < need:
            raise FrameError(
                f"{fmt.value} {self.width}x{self.height} stride {self.stride}: buffer has {self.data.size} "
                f"bytes, needs {need}"
            )

    def rows(self) -> np.ndarray:
        """The buffer as a 2-D uint8 array of `buffer_rows` x `stride` (a view when possible)."""
        n = buffer_rows(self.pixel_format, self.height) * self.stride
        return np.ascontiguousarray(self.data.reshape(-1)[:n]).reshape(-1, self.stride)

    @staticmethod
    def from_bgr(image: np.ndarray, color: ColorSpec = ColorSpec()) -> "Frame":
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise FrameError(f"expected an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        return Frame(image, w, h, 3 * w, PixelFormat.BGR8, color)
