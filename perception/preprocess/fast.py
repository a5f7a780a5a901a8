"""CPU fast path of docs/preprocess.md: OpenCV remap with fixed-point maps, folded colour + normalisation.

Per camera and call, each source plane is widened to float32 and sampled with `cv2.remap` through maps
converted once by `cv2.convertMaps` to OpenCV's 1/32-pixel fixed point (exactly the contract's
quantisation; OpenCV >= 4.11 / 5 samples float32 maps *without* quantising). Colour conversion, clamp and
normalisation then run as a few per-plane OpenCV ops writing into the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

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
    pad_output,
    valid_entries,
    yuv_to_rgb_coefficients,
)

_YUV_FORMATS = (PixelFormat.NV12, PixelFormat.YUYV)
_RGB_ORDER = {PixelFormat.RGB8: (0, 1, 2), PixelFormat.BGR8: (2, 1, 0)}  # source channel of R, G, B
_MAX_SOURCE_SIDE = 32767  # fixed-point maps hold pixel indices as int16
_BAND_ROWS = 32  # output rows sampled per band
_MAX_ROW_OVERLAP = 1.5  # widen at most this many times the source rows, else sample in one band

Scratch = Callable[[tuple[int, ...]], np.ndarray]  # float32 buffer of (at least) that shape


@dataclass(frozen=True)
class _Band:
    rows: slice  # output rows
    src_start: int  # source rows [src_start, src_stop) feed these output rows
    src_stop: int
    map_xy: np.ndarray  # int16 [rows, W, 2] (x0, y0 - src_start)
    map_frac: np.ndarray  # uint16 [rows, W] (qy & 31) * 32 + (qx & 31)


class _BandedSampler:
    """Bilinear samples of one source plane at fixed coordinates, one band of output rows at a time.

    Widening a whole 1080p plane to float32 and then sampling it streams ~8 MB through memory twice;
    widening only the source rows a band of output rows reads keeps them in cache (a third less time for
    4 x 1080p NV12 letterbox tables, benchmarks/preprocess.py). Bands whose entries are all pad are skipped
    (the pad mask writes them). Tables whose bands overlap heavily in source rows (a camera mounted
    sideways) fall back to one band.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, valid: np.ndarray, src_rows: int) -> None:
        xy, frac = cv2.convertMaps(x, y, cv2.CV_16SC2, nninterpolation=False)
        bands = []
        for start in range(0, x.shape[0], _BAND_ROWS):
            rows = slice(start, start + _BAND_ROWS)
            ok = valid[rows]
            if not ok.any():
                continue
            y0 = xy[rows][..., 1][ok]
            # taps at y0 and y0 + 1, clamped like the contract: rows outside the band replicate its edge rows,
            # which are then the image's edge rows
            src_start = int(np.clip(y0.min(), 0, src_rows - 1))
            src_stop = int(np.clip(y0.max() + 1, 0, src_rows - 1)) + 1
            band_xy = xy[rows].copy()
            band_xy[..., 1] -= src_start
            band_xy[~ok] = 0
            bands.append(_Band(rows, src_start, src_stop, band_xy, frac[rows].copy()))
        if sum(b.src_stop - b.src_start for b in bands) > _MAX_ROW_OVERLAP * src_rows:
            bands = [_Band(slice(None), 0, src_rows, xy, frac)]
        self.bands = bands
        self.max_src_rows = max((b.src_stop - b.src_start for b in bands), default=0)

    def sample(self, plane: np.ndarray, dst: np.ndarray, scratch: Scratch) -> None:
        """`plane`: uint8 [rows, cols(, channels)] (any strides); `dst`: float32 [H, W(, channels)]."""
        widened = scratch((self.max_src_rows, *plane.shape[1:]))
        for band in self.bands:
            source = widened[: band.src_stop - band.src_start]
            np.copyto(source, plane[band.src_start : band.src_stop], casting="unsafe")
            cv2.remap(source, band.map_xy, band.map_frac, cv2.INTER_LINEAR, dst=dst[band.rows],
                      borderMode=cv2.BORDER_REPLICATE)


@dataclass
class _CameraPlan:
    """Everything about one camera that depends only on its table and source size, built once."""

    source_size: tuple[int, int]  # (width, height)
    luma: _BandedSampler  # also samples BGR8 / RGB8 pixels
    chroma: dict[PixelFormat, _BandedSampler]
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
        chroma_rows = {PixelFormat.NV12: height // 2, PixelFormat.YUYV: height}
        chroma = {
            fmt: _BandedSampler(*chroma_coordinates(fmt, x, y), valid, chroma_rows[fmt]) for fmt in _YUV_FORMATS
        }
        invalid = None if valid.all() else (~valid).astype(np.uint8)
        return _CameraPlan((width, height), _BandedSampler(x, y, valid, height), chroma, invalid)


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
    Buffers for widened source rows are allocated on first use and shared by all cameras.
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
        self._a, self._b = normalization_affine(norm)  # RGB order
        self._rgb_planes = norm.rgb_planes
        # the [0, 255] clamp of YUV conversions, moved into the normalised domain
        self._lo, self._hi = self._b, (self._a.astype(np.float64) * 255.0 + self._b).astype(np.float32)
        self._rgb_affine = {fmt: self._channel_affine(order) for fmt, order in _RGB_ORDER.items()}
        self._plans: list[_CameraPlan | None] = [
            None if size is None else _CameraPlan.build(n, table, *size)
            for n, (table, size) in enumerate((t, expected_source_size(t)) for t in self.tables)
        ]
        self._colors: dict[ColorSpec, _FoldedColor] = {}
        self._widened: dict[tuple[int, ...], np.ndarray] = {}
        pad = pad_output(norm)
        self._pad_planes = [np.full((height, width), pad[c], np.float32) for c in np.argsort(self._rgb_planes)]
        self._planes32 = self.output if self.dtype == np.float32 else np.empty(self.output.shape, np.float32)
        # samples; all-pad bands leave rows unwritten, so these start finite
        self._luma = np.zeros((height, width), np.float32)
        self._chroma = np.zeros((height, width, 2), np.float32)
        self._rgb_sampled = np.zeros((height, width, 3), np.float32)
        self._chroma_u = np.empty((height, width), np.float32)
        self._chroma_v = np.empty((height, width), np.float32)
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
                for plane, pad in zip(planes, self._pad_planes):
                    cv2.copyTo(pad, plan.invalid, dst=plane)
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
        """3x4 matrix for cv2.transform: output plane of colour c = a_c * source channel order[c] + b_c."""
        affine = np.zeros((3, 4), np.float64)
        for c, src in enumerate(order):
            plane = self._rgb_planes[c]
            affine[plane, src] = self._a[c]
            affine[plane, 3] = self._b[c]
        return affine

    def _scratch(self, shape: tuple[int, ...]) -> np.ndarray:
        """float32 rows for widened source rows; planes and cameras are sampled one after another, so the
        buffer of a row shape is shared."""
        rows, row_shape = shape[0], shape[1:]
        buffer = self._widened.get(row_shape)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._widened[row_shape] = np.empty(shape, np.float32)
        return buffer[:rows]

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
        plan.luma.sample(luma, self._luma, self._scratch)
        plan.chroma[frame.pixel_format].sample(uv, self._chroma, self._scratch)
        u, v = cv2.split(self._chroma, [self._chroma_u, self._chroma_v])

        color = self._colors.get(frame.color)
        if color is None:
            color = self._colors[frame.color] = _FoldedColor.build(frame.color, self._a, self._b)
        y = self._luma
        r, g, b = (planes[p] for p in self._rgb_planes)
        cv2.addWeighted(y, color.alpha[0], v, color.gamma[0], color.delta[0], dst=r)
        cv2.addWeighted(y, color.alpha[1], u, color.beta[1], color.delta[1], dst=g)
        cv2.scaleAdd(v, color.gamma[1], g, dst=g)
        cv2.addWeighted(y, color.alpha[2], u, color.beta[2], color.delta[2], dst=b)
        for c, p in enumerate(self._rgb_planes):
            np.clip(planes[p], self._lo[c], self._hi[c], out=planes[p])

    def _rgb(self, frame: Frame, plan: _CameraPlan, planes: np.ndarray) -> None:
        pixels = frame.rows()[:, : 3 * frame.width].reshape(frame.height, frame.width, 3)
        plan.luma.sample(pixels, self._rgb_sampled, self._scratch)
        cv2.transform(self._rgb_sampled, self._rgb_affine[frame.pixel_format], dst=self._rgb_normalised)
        cv2.split(self._rgb_normalised, list(planes))
