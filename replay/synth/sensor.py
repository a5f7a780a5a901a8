"""What the camera adds to the ideal render: exposure / lighting gain, lens blur, read noise, and the
output encoding (JPEG, NV12, BGR8)."""

from __future__ import annotations

import cv2
import numpy as np

from perception.errors import FrameError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat

BLUR_SIGMA = 0.6        # px, Gaussian point spread of the lens
NOISE_SIGMA = 2.0       # grey levels at full light; grows as the light (and so the gain) drops
_NOISE_PAD = 64
NV12_COLOR = ColorSpec(ColorMatrix.BT601, ColorRange.LIMITED)


class Sensor:
    """Per-camera sensor model. The read noise of a frame is a randomly placed window of a Gaussian field
    drawn once per camera (drawing 6 M normals per 1080p frame would dominate the generator's time)."""

    def __init__(self, width: int, height: int, rng: np.random.Generator):
        self._field = rng.standard_normal((height + _NOISE_PAD, width + _NOISE_PAD, 3), dtype=np.float32)
        self.width, self.height = width, height

    def expose(self, image: np.ndarray, gain: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
        """Apply the scene's light level (per-channel gain), lens blur and read noise; returns uint8 BGR."""
        lit = cv2.multiply(image, (*gain, 0.0))
        blurred = cv2.GaussianBlur(lit, (3, 3), BLUR_SIGMA)
        dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
        noise = self._field[dy:dy + self.height, dx:dx + self.width]
        sigma = NOISE_SIGMA / max(float(np.mean(gain)), 0.2)
        return cv2.addWeighted(blurred, 1.0, noise, sigma, 0.0, dtype=cv2.CV_8U)


def encode(image: np.ndarray, image_format: str, jpeg_quality: int) -> Frame | bytes:
    """The frame as the drive stores it: JPEG bytes, or a raw NV12 / BGR8 Frame."""
    if image_format == "jpeg":
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise FrameError(f"JPEG encoding of a {image.shape[1]}x{image.shape[0]} image failed")
        return data.tobytes()
    if image_format == "nv12":
        return bgr_to_nv12(image)
    return Frame.from_bgr(image)


def bgr_to_nv12(image: np.ndarray, color: ColorSpec = NV12_COLOR) -> Frame:
    """BGR8 -> NV12 by the inverse of docs/preprocess.md's conversion; chroma sited at luma (2i, 2j + 0.5):
    averaged over the two rows it sits between and filtered [1, 2, 1] / 4 across columns."""
    h, w = image.shape[:2]
    if w % 2 or h % 2:
        raise FrameError(f"nv12 needs an even width and height, got {w}x{h}")
    kr, kb = (0.299, 0.114) if color.matrix is ColorMatrix.BT601 else (0.2126, 0.0722)
    kg = 1.0 - kr - kb
    luma = np.array([kb, kg, kr])                                 # on B, G, R
    pb = (np.array([1.0, 0.0, 0.0]) - luma) / (2 * (1 - kb))
    pr = (np.array([0.0, 0.0, 1.0]) - luma) / (2 * (1 - kr))
    if color.range is ColorRange.LIMITED:
        rows, offsets = [luma * 219 / 255, pb * 224 / 255, pr * 224 / 255], [16.0, 128.0, 128.0]
    else:
        rows, offsets = [luma, pb, pr], [0.0, 128.0, 128.0]
    matrix = np.column_stack([np.array(rows), offsets]).astype(np.float32)
    yuv = cv2.transform(image.astype(np.float32), matrix)
    y = np.clip(np.rint(yuv[..., 0]), 0, 255).astype(np.uint8)
    chroma = cv2.sepFilter2D(np.ascontiguousarray(yuv[..., 1:]), -1, np.array([0.25, 0.5, 0.25], np.float32),
                             np.array([0.5, 0.5], np.float32), anchor=(1, 0), borderType=cv2.BORDER_REPLICATE)
    uv = np.clip(np.rint(chroma[0::2, 0::2]), 0, 255).astype(np.uint8)
    data = np.concatenate([y.reshape(-1), uv.reshape(-1)])
    return Frame(data, w, h, w, PixelFormat.NV12, color)
