"""CPU fast path of docs/preprocess.md: OpenCV remap with fixed-point maps, folded colour + normalisation.

Per camera and call: the source planes are widened to float32 (into buffers kept between calls), sampled
with `cv2.remap` through maps converted once by `cv2.convertMaps` to OpenCV's 1/32-pixel fixed point
(exactly the contract's quantisation; OpenCV >= 4.11 / 5 samples float maps *without* quantising), then
colour conversion, clamp and normalisation run as a few per-plane OpenCV ops writing into the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from perception.errors import FrameError
from perception.frame import ColorSpec, Frame, PixelFormat
from perception.preprocess.common import (
    Normalization,
    RemapMaps,
    check_frames,
    check_output_dtype,
    check_tables,
    chroma_coordinates,
    expected_source_size,
    normalization_affine,
    valid_entries,
    yuv_to_rgb_coefficients,
)

_YUV_FORMATS = (PixelFormat.NV12, PixelFormat.YUYV)
_RGB_ORDER = {PixelFormat.RGB8: (0, 1, 2), PixelFormat.BGR8: (2, 1, 0)}  # source channel of R, G, B
_MAX_SOURCE_SIDE = 32767  # fixed-point maps hold pixel indices as int16


def _fixed_point_maps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's fixed-point maps: int16 (x0, y0) pairs + (qy & 31) * 32 + (qx & 31), qx = rint(32 x)."""
    return cv2.convertMaps(x, y, cv2.CV_16SC2, nninterpolation=False)


@dataclass
class _CameraPlan:
    """Everything about one camera that depends only on its table and source size, built once."""

    source_size: tuple[int, int]  # (width, height)
    luma_maps: tuple[np.ndarray, np.ndarray]
    chroma_maps: dict[PixelFormat, tuple[np.ndarray, np.ndarray]]
    invalid: np.ndarray | None  # uint8 [H, W], 1 where the output is the pad value; None when all valid

    @staticmethod
    def build(camera: int, table: RemapMaps, width: int, height: int) -> "_CameraPlan":
        if max(width, height) > _MAX_SOURCE_SIDE:
            raise FrameError(
                f"camera {camera}: source is {width}x{height}; the OpenCV path samples sources of at most "
                f"{_MAX_SOURCE_SIDE} px a side"
            )
        valid = valid_entries(table.map_x, table.map_y, width, height)
        x = np.where(valid, table.map_x, np.float32(0))
        y = np.where(valid, table.map_y, np.float32(0))
        chroma = {fmt: _fixed_point_maps(*chroma_coordinates(fmt, x, y)) for fmt in _YUV_FORMATS}
        invalid = None if valid.all() else (~valid).astype(np.uint8)
        return _CameraPlan((width, height), _fixed_point_maps(x, y), chroma, invalid)


@dataclass(frozen=True)
class _FoldedColor:
    """Per output channel c: clamp(alpha Y + beta_c U + gamma_c V + delta_c, lo_c, hi_c).

    Colour conversion and normalisation folded into one affine map; the [0, 255] clamp moves into the
    normalised domain as [b_c, 255 a_c + b_c] (a_c > 0, so the order of clamp and affine does not matter).
    """

    alpha: tuple[float, float, float]
    beta: tuple[float, float, float]
    gamma: tuple[float, float, float]
    delta: tuple[float, float, float]

    @staticmethod
    def build(color: ColorSpec, a: np.ndarray, b: np.ndarray) -> "_FoldedColor":
        k = [float(v) for v in yuv_to_rgb_coefficients(color)]
        y_offset, y_scale, c_scale, r_v, g_u, g_v, b_u = k
        u_terms, v_terms = (0.0, g_u, b_u), (r_v, g_v, 0.0)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return _FoldedColor(
            alpha=tuple(a64 * y_scale),
            beta=tuple(a64 * np.multiply(u_terms, c_scale)),
            gamma=tuple(a64 * np.multiply(v_terms, c_scale)),
            delta=tuple(
                b64 - a64 * (y_scale * y_offset + 128.0 * c_scale * (np.add(u_terms, v_terms)))
            ),
        )


class FastPreprocessor:
    """Preprocesses one frame per camera into a batch it owns: [N, 3, H_net, W_net] of `dtype`.

    `run` returns the same array every call, overwritten by the next call: copy it to keep it.
    Source-size buffers are allocated on first use and reused while frame sizes and formats stay the same.
    OpenCV parallelises the remaps with its own thread pool (`cv2.setNumThreads`).
    """

    def __init__(
        self,
        tables: Sequence[RemapMaps],
        norm: Normalization = Normalization(),
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self.dtype = check_output_dtype(dtype)
        height, width = check_tables(tables)
        self.tables = list(tables)
        self.output = np.empty((len(self.tables), 3, height, width), self.dtype)
        self._a, self._b = normalization_affine(norm)
        # the [0, 255] clamp of YUV conversions, moved into the normalised domain
        self._lo, self._hi = self._b, (self._a.astype(np.float64) * 255.0 + self._b).astype(np.float32)
        self._rgb_affine = {fmt: self._channel_affine(order) for fmt, order in _RGB_ORDER.items()}
        self._plans: list[_CameraPlan | None] = [
            None if size is None else _CameraPlan.build(n, table, *size)
            for n, (table, size) in enumerate((t, expected_source_size(t)) for t in self.tables)
        ]
        self._colors: dict[ColorSpec, _FoldedColor] = {}
        self._source_buffers: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        self._zero = np.zeros((height, width), np.float32)
        self._planes32 = self.output if self.dtype == np.float32 else np.empty(self.output.shape, np.float32)
        self._luma = np.empty((height, width), np.float32)
        self._chroma = np.empty((height, width, 2), np.float32)
        self._chroma_u = np.empty((height, width), np.float32)
        self._chroma_v = np.empty((height, width), np.float32)
        self._rgb_sampled = np.empty((height, width, 3), np.float32)
        self._rgb_normalised = np.empty((height, width, 3), np.float32)

    def run(self, frames: Sequence[Frame]) -> np.ndarray:
        check_frames(frames, self.tables)
        for n, frame in enumerate(frames):
            plan = self._plan(n, frame)
            planes = self._planes32[n]
            if frame.pixel_format in _YUV_FORMATS:
                self._yuv(frame, plan, planes)
            else:
                self._rgb(frame, plan, planes)
            if plan.invalid is not None:
                for plane in planes:
                    cv2.copyTo(self._zero, plan.invalid, dst=plane)
            if self.dtype == np.float16:
                for c in range(3):
                    cv2.multiply(planes[c], 1.0, dst=self.output[n, c], dtype=cv2.CV_16F)
        return self.output

    def _plan(self, n: int, frame: Frame) -> _CameraPlan:
        plan = self._plans[n]
        if plan is None or plan.source_size != (frame.width, frame.height):
            plan = self._plans[n] = _CameraPlan.build(n, self.tables[n], frame.width, frame.height)
        return plan

    def _channel_affine(self, order: tuple[int, int, int]) -> np.ndarray:
        """3x4 matrix for cv2.transform: output channel c = a_c * source channel order[c] + b_c."""
        affine = np.zeros((3, 4), np.float64)
        for c, src in enumerate(order):
            affine[c, src] = self._a[c]
            affine[c, 3] = self._b[c]
        return affine

    def _source_buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """float32 copy of a source plane; cameras are processed one after another and share these."""
        buffer = self._source_buffers.get((name, shape))
        if buffer is None:
            buffer = self._source_buffers[(name, shape)] = np.empty(shape, np.float32)
        return buffer

    def _remap(self, source: np.ndarray, maps: tuple[np.ndarray, np.ndarray], dst: np.ndarray) -> None:
        cv2.remap(source, maps[0], maps[1], cv2.INTER_LINEAR, dst=dst, borderMode=cv2.BORDER_REPLICATE)

    def _yuv(self, frame: Frame, plan: _CameraPlan, planes: np.ndarray) -> None:
        rows = frame.rows()
        w, h = frame.width, frame.height
        if frame.pixel_format is PixelFormat.NV12:
            luma = rows[:h, :w]
            uv = rows[h : h + h // 2, :w].reshape(h // 2, w // 2, 2)
        else:  # YUYV: Y0 U0 Y1 V0
            packed = rows[:, : 2 * w]
            luma = packed[:, 0::2]
            uv = packed.reshape(h, w // 2, 4)[:, :, 1::2]
        luma_f = self._source_buffer("luma", luma.shape)
        uv_f = self._source_buffer("uv", uv.shape)
        np.copyto(luma_f, luma, casting="unsafe")
        np.copyto(uv_f, uv, casting="unsafe")
        self._remap(luma_f, plan.luma_maps, self._luma)
        self._remap(uv_f, plan.chroma_maps[frame.pixel_format], self._chroma)
        u, v = cv2.split(self._chroma, [self._chroma_u, self._chroma_v])

        color = self._colors.get(frame.color)
        if color is None:
            color = self._colors[frame.color] = _FoldedColor.build(frame.color, self._a, self._b)
        y = self._luma
        r, g, b = planes
        cv2.addWeighted(y, color.alpha[0], v, color.gamma[0], color.delta[0], dst=r)
        cv2.addWeighted(y, color.alpha[1], u, color.beta[1], color.delta[1], dst=g)
        cv2.scaleAdd(v, color.gamma[1], g, dst=g)
        cv2.addWeighted(y, color.alpha[2], u, color.beta[2], color.delta[2], dst=b)
        for c in range(3):
            np.clip(planes[c], self._lo[c], self._hi[c], out=planes[c])

    def _rgb(self, frame: Frame, plan: _CameraPlan, planes: np.ndarray) -> None:
        pixels = frame.rows()[:, : 3 * frame.width].reshape(frame.height, frame.width, 3)
        pixels_f = self._source_buffer("rgb", pixels.shape)
        np.copyto(pixels_f, pixels, casting="unsafe")
        self._remap(pixels_f, plan.luma_maps, self._rgb_sampled)
        cv2.transform(self._rgb_sampled, self._rgb_affine[frame.pixel_format], dst=self._rgb_normalised)
        cv2.split(self._rgb_normalised, list(planes))
