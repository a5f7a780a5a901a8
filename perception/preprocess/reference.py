"""Plain numpy preprocessing: docs/preprocess.md written out line by line.

Slow and obviously right; the fast CPU path and the CUDA kernels are tested against it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import numpy.typing as npt

from perception.frame import Frame, PixelFormat
from perception.preprocess.common import (
    Normalization,
    RemapMaps,
    YuvCoefficients,
    check_frames,
    check_output_dtype,
    check_tables,
    chroma_coordinates,
    pad_output,
    valid_entries,
    yuv_to_rgb_coefficients,
)


def preprocess_reference(
    frames: Sequence[Frame],
    tables: Sequence[RemapMaps],
    norm: Normalization = Normalization(),
    dtype: npt.DTypeLike = np.float32,
) -> np.ndarray:
    """One frame per camera -> normalised planar batch [N, 3, H_net, W_net] of `dtype`, channels in
    `norm.color_order`."""
    out_dtype = check_output_dtype(dtype)
    height, width = check_tables(tables)
    check_frames(frames, tables)
    planes = list(norm.rgb_planes)
    mean = np.asarray(norm.mean, np.float32)[planes].reshape(3, 1, 1)   # RGB order
    std = np.asarray(norm.std, np.float32)[planes].reshape(3, 1, 1)
    divisor = np.float32(255.0 / norm.value_range)
    pad = pad_output(norm)
    out = np.empty((len(frames), 3, height, width), np.float32)
    for n, (frame, table) in enumerate(zip(frames, tables)):
        valid = valid_entries(table.map_x, table.map_y, frame.width, frame.height)
        # Invalid entries may hold anything (-1, NaN, huge values): sample somewhere harmless, zero them below.
        x = np.where(valid, table.map_x, np.float32(0))
        y = np.where(valid, table.map_y, np.float32(0))
        rgb = (sample_rgb(frame, x, y) / divisor - mean) / std
        rgb[:, ~valid] = pad[:, None]
        out[n][planes] = rgb
    return out.astype(out_dtype)  # float16: round to nearest even


def bilinear(plane: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample `plane` at float32 coordinates with 1/32-quantised bilinear weights and edge replication."""
    hp, wp = plane.shape
    qx = np.rint(x * np.float32(32)).astype(np.int32)  # rint rounds half to even
    qy = np.rint(y * np.float32(32)).astype(np.int32)
    x0 = qx >> 5
    y0 = qy >> 5
    ax = (qx & 31).astype(np.float32) / np.float32(32)
    ay = (qy & 31).astype(np.float32) / np.float32(32)
    xa = np.clip(x0, 0, wp - 1)
    xb = np.clip(x0 + 1, 0, wp - 1)
    ya = np.clip(y0, 0, hp - 1)
    yb = np.clip(y0 + 1, 0, hp - 1)
    one = np.float32(1)
    w00 = (one - ay) * (one - ax)
    w01 = (one - ay) * ax
    w10 = ay * (one - ax)
    w11 = ay * ax
    p = plane.astype(np.float32)
    return p[ya, xa] * w00 + p[ya, xb] * w01 + p[yb, xa] * w10 + p[yb, xb] * w11


def sample_rgb(frame: Frame, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """RGB in 0..255, float32 [3, H_net, W_net], of `frame` sampled at luma coordinates (x, y)."""
    rows = frame.rows()
    w, h, fmt = frame.width, frame.height, frame.pixel_format
    if fmt in (PixelFormat.BGR8, PixelFormat.RGB8):
        pixels = rows[:, : 3 * w].reshape(h, w, 3)
        order = (2, 1, 0) if fmt is PixelFormat.BGR8 else (0, 1, 2)
        return np.stack([bilinear(pixels[:, :, c], x, y) for c in order])
    if fmt is PixelFormat.NV12:
        luma = rows[:h, :w]
        uv = rows[h : h + h // 2, :w].reshape(h // 2, w // 2, 2)
        u, v = uv[:, :, 0], uv[:, :, 1]
    else:  # YUYV: Y0 U0 Y1 V0
        packed = rows[:, : 2 * w]
        luma, u, v = packed[:, 0::2], packed[:, 1::4], packed[:, 3::4]
    cx, cy = chroma_coordinates(fmt, x, y)
    samples = bilinear(luma, x, y), bilinear(u, cx, cy), bilinear(v, cx, cy)
    return yuv_to_rgb(*samples, yuv_to_rgb_coefficients(frame.color))


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, k: YuvCoefficients) -> np.ndarray:
    """Sampled Y, U, V planes -> RGB [3, ...] in float32, clamped to [0, 255]."""
    luma = (y - k.y_offset) * k.y_scale
    pb = (u - np.float32(128)) * k.c_scale
    pr = (v - np.float32(128)) * k.c_scale
    r = luma + k.r_v * pr
    g = luma + k.g_u * pb + k.g_v * pr
    b = luma + k.b_u * pb
    return np.clip(np.stack([r, g, b]), np.float32(0), np.float32(255))
