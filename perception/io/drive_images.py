"""Image payloads of drive files <-> `Frame`, decoded with limits.

Raw images (Foxglove `RawImage`, ROS `sensor_msgs/Image`) keep their bytes, row pitch and format; compressed
ones (JPEG, PNG) decode to BGR8. Every decoder checks the declared size against the limits below and the
data length against the declared size before touching the pixels; `where` names the file, topic and log
time in each error.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from perception.errors import DriveError, FrameError
from perception.frame import ColorSpec, Frame, PixelFormat, buffer_rows, min_stride
from perception.preprocess.common import yuv_to_rgb_coefficients
from perception.preprocess.reference import yuv_to_rgb

MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 40_000_000  # ~ 120 MB as BGR8; automotive cameras are <= 8 MP

# Encoding names (Foxglove RawImage and ROS 2 image_encodings) kept as they are.
RAW_FORMATS = {
    "nv12": PixelFormat.NV12,
    "yuyv": PixelFormat.YUYV,
    "yuv422_yuy2": PixelFormat.YUYV,
    "bgr8": PixelFormat.BGR8,
    "8UC3": PixelFormat.BGR8,
    "rgb8": PixelFormat.RGB8,
}
# Encodings converted on read: mono to BGR8, UYVY to YUYV (swap the bytes of each pair).
_MONO = ("mono8", "8UC1")
_UYVY = ("uyvy", "yuv422")


def check_size(where: str, width: int, height: int) -> None:
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise DriveError(f"{where}: image size {width}x{height} is outside 1..{MAX_IMAGE_SIDE} per side")
    if width * height > MAX_IMAGE_PIXELS:
        raise DriveError(f"{where}: image {width}x{height} has more than {MAX_IMAGE_PIXELS} pixels")


def frame_from_raw(where: str, encoding: str, width: int, height: int, step: int, data: bytes,
                   color: ColorSpec = ColorSpec()) -> Frame:
    """A raw image message as a Frame; the data must be exactly `step` x rows bytes."""
    check_size(where, width, height)
    if encoding in RAW_FORMATS:
        fmt = RAW_FORMATS[encoding]
    elif encoding in _MONO or encoding in _UYVY:
        fmt = PixelFormat.BGR8 if encoding in _MONO else PixelFormat.YUYV
    else:
        known = ", ".join([*RAW_FORMATS, *_MONO, *_UYVY])
        raise DriveError(f"{where}: unsupported raw image encoding {encoding!r} (supported: {known})")
    least = width if encoding in _MONO else min_stride(fmt, width)
    rows = buffer_rows(fmt, height)
    if step < least:
        raise DriveError(f"{where}: {encoding} {width}x{height}: step {step} is below the minimum {least} bytes")
    if len(data) != step * rows:
        raise DriveError(f"{where}: {encoding} {width}x{height} step {step} needs {step * rows} bytes "
                         f"({rows} rows), the message has {len(data)}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if encoding in _MONO:
        gray = buffer.reshape(height, step)[:, :width]
        return Frame.from_bgr(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    if encoding in _UYVY:
        pitched = buffer.reshape(rows, step).copy()
        pitched[:, : 2 * width] = pitched[:, : 2 * width].reshape(rows, width, 2)[:, :, ::-1].reshape(rows, -1)
        buffer = pitched.reshape(-1)
    try:
        return Frame(buffer, width, height, step, fmt, color)
    except FrameError as e:  # odd NV12 / YUYV sizes
        raise DriveError(f"{where}: {e}") from None


def compressed_size(where: str, data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG or PNG header, without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise DriveError(f"{where}: compressed image is {image.format}, expected JPEG or PNG")
            return image.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DriveError(f"{where}: not a readable JPEG/PNG image ({e})") from None


def frame_from_compressed(where: str, data: bytes) -> Frame:
    """A JPEG/PNG image decoded to a BGR8 Frame, its header checked against the limits first."""
    width, height = compressed_size(where, data)
    check_size(where, width, height)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] != (height, width):
        raise DriveError(f"{where}: the {width}x{height} compressed image does not decode")
    return Frame.from_bgr(image)


def frame_to_bgr(frame: Frame) -> np.ndarray:
    """The frame as an HxWx3 BGR image; YUV converted by docs/preprocess.md with its ColorSpec, each chroma
    sample replicated over the pixels it covers (a display conversion, not the network's resampling)."""
    rows = frame.rows()
    w, h = frame.width, frame.height
    if frame.pixel_format is PixelFormat.BGR8:
        return rows[:, : 3 * w].reshape(h, w, 3)
    if frame.pixel_format is PixelFormat.RGB8:
        return cv2.cvtColor(rows[:, : 3 * w].reshape(h, w, 3), cv2.COLOR_RGB2BGR)
    if frame.pixel_format is PixelFormat.NV12:
        y = rows[:h, :w]
        uv = rows[h:, :w].reshape(h // 2, w // 2, 2).repeat(2, axis=0).repeat(2, axis=1)
    else:
        pairs = rows[:, : 2 * w].reshape(h, w // 2, 4)
        y = pairs[:, :, [0, 2]].reshape(h, w)
        uv = pairs[:, :, [1, 3]].repeat(2, axis=1)
    planes = (p.astype(np.float32) for p in (y, uv[..., 0], uv[..., 1]))
    rgb = yuv_to_rgb(*planes, yuv_to_rgb_coefficients(frame.color))
    return np.rint(rgb[::-1]).astype(np.uint8).transpose(1, 2, 0).copy()


def encode_jpeg(frame: Frame, quality: int) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", frame_to_bgr(frame), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DriveError(f"JPEG encoding of a {frame.width}x{frame.height} frame failed")
    return jpeg.tobytes()
