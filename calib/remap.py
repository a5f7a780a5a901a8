"""The composite remap table: undistort + resize + letterbox (or crop) as one bilinear sample per pixel.

Between the distorted source image and the network input sits a *virtual* distortion-free pinhole
camera with the source's fx, fy, cx, cy and size. The network input is that virtual image scaled by s
and centred, or aligned to the top-left corner as YOLOX letterboxes (pixel-centre convention, as cv2.resize):

    letterbox: s = min(W_net / W, H_net / H)        crop: s = max(W_net / W, H_net / H)
    centre:   ox = (W_net - s W) / 2, oy = (H_net - s H) / 2        top-left: ox = oy = 0
    virtual pixel of network pixel (u, v):  xv = (u + 0.5 - ox) / s - 0.5,  yv = (v + 0.5 - oy) / s - 0.5

so the network input is itself a pinhole camera (`net_camera`): fx' = s fx, cx' = s (cx + 0.5) + ox - 0.5.
Table entry (v, u) holds the distorted source pixel of (xv, yv). It is valid iff 0 <= x <= W-1 and
0 <= y <= H-1; letterbox bars (virtual pixel outside [-0.5, W-0.5] x [-0.5, H-0.5]), points outside the
source image and points past the lens model's one-to-one range hold -1 in both maps (docs/preprocess.md:
the preprocessors write 0.0, the mean colour, there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from calib.camera import CameraModel

MODES = ("letterbox", "crop")
ALIGNMENTS = ("centre", "top-left")


@dataclass(frozen=True, eq=False)
class RemapTable:
    map_x: np.ndarray  # float32 [H_net, W_net], -1 = pad
    map_y: np.ndarray
    net_camera: CameraModel
    source_camera: CameraModel
    mode: str
    align: str = "centre"

    @property
    def valid(self) -> np.ndarray:
        """bool [H_net, W_net]: entries that sample the source image."""
        return self.map_x >= 0

    def net_to_source(self, uv_net: np.ndarray) -> np.ndarray:
        """Network-input pixels [N,2] -> distorted source pixels [N,2] (undo letterbox, re-distort).
        NaN past the source lens model's one-to-one range; no clipping to the image."""
        uv, ok = self.source_camera.normalized_to_pixel(self.net_camera.undistort_points(uv_net))
        return np.where(ok[:, None], uv, np.nan)

    def source_to_net(self, uv_src: np.ndarray) -> np.ndarray:
        """Distorted source pixels [N,2] -> network-input pixels [N,2] (NaN where undistortion fails)."""
        return self.net_camera.normalized_to_pixel(self.source_camera.undistort_points(uv_src))[0]


def build_remap(camera: CameraModel, net_w: int, net_h: int, mode: str = "letterbox",
                align: str = "centre") -> RemapTable:
    """The composite table sampling `camera`'s raw image into a `net_w` x `net_h` network input."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    if net_w <= 0 or net_h <= 0:
        raise ValueError(f"network input size must be positive, got {net_w}x{net_h}")
    pick = min if mode == "letterbox" else max
    s = pick(net_w / camera.width, net_h / camera.height)
    ox, oy = ((net_w - s * camera.width) / 2, (net_h - s * camera.height) / 2) if align == "centre" else (0.0, 0.0)
    net_camera = dataclasses.replace(
        camera, width=net_w, height=net_h, fx=s * camera.fx, fy=s * camera.fy,
        cx=s * (camera.cx + 0.5) + ox - 0.5, cy=s * (camera.cy + 0.5) + oy - 0.5, distortion="none", coeffs=())

    u, v = np.meshgrid(np.arange(net_w, dtype=np.float64), np.arange(net_h, dtype=np.float64))
    xv, yv = (u + 0.5 - ox) / s - 0.5, (v + 0.5 - oy) / s - 0.5
    inside_virtual = (xv >= -0.5) & (xv <= camera.width - 0.5) & (yv >= -0.5) & (yv <= camera.height - 0.5)
    xy = np.stack([(xv.ravel() - camera.cx) / camera.fx, (yv.ravel() - camera.cy) / camera.fy], axis=1)
    src, lens_ok = camera.normalized_to_pixel(xy)
    xs, ys = src[:, 0].reshape(u.shape), src[:, 1].reshape(u.shape)
    valid = (inside_virtual & lens_ok.reshape(u.shape)
             & (xs >= 0) & (xs <= camera.width - 1) & (ys >= 0) & (ys <= camera.height - 1))
    map_x = np.where(valid, xs, -1.0).astype(np.float32)
    map_y = np.where(valid, ys, -1.0).astype(np.float32)
    return RemapTable(map_x, map_y, net_camera, camera, mode, align)
