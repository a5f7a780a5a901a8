"""How boxes look, wherever they are drawn: Foxglove annotations in run files, the report's contact sheet
and its overlay video. One colour per class, one label format."""

from __future__ import annotations

import math

import cv2
import numpy as np

# RGB in 0..1, chosen to stay distinct for colour-blind viewers (Okabe-Ito)
CLASS_COLORS: dict[str, tuple[float, float, float]] = {
    "car": (0.0, 0.45, 0.70),
    "truck": (0.80, 0.47, 0.65),
    "pedestrian": (0.90, 0.62, 0.0),
    "cyclist": (0.0, 0.62, 0.45),
}
OTHER_COLOR = (0.6, 0.6, 0.6)
MISSED_COLOR = (0.84, 0.15, 0.16)   # ground-truth box nobody detected
FALSE_COLOR = (1.0, 0.0, 1.0)       # detection matching no ground truth
GT_COLOR = (1.0, 1.0, 1.0)


def class_color(cls: str) -> tuple[float, float, float]:
    return CLASS_COLORS.get(cls, OTHER_COLOR)


def object_label(cls: str, track_id: int, score: float, range_m: float, coasting: bool) -> str:
    text = f"{cls} #{track_id} {score:.2f}"
    if math.isfinite(range_m):
        text += f" {range_m:.0f}m"
    return text + (" (coast)" if coasting else "")


def bgr(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    return int(rgb[2] * 255), int(rgb[1] * 255), int(rgb[0] * 255)


def draw_box(image: np.ndarray, box: np.ndarray | tuple, rgb: tuple[float, float, float], label: str = "",
             thickness: int = 2, dashed: bool = False) -> None:
    """Draws one box (x0, y0, x1, y1 in pixels of `image`) with its label above it, in place (BGR image)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = max(min(x0, w - 1), 0), max(min(x1, w - 1), 0)
    y0, y1 = max(min(y0, h - 1), 0), max(min(y1, h - 1), 0)
    color = bgr(rgb)
    if dashed:
        for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)),
                                   ((x0, y1), (x0, y0))):
            n = max(1, int(math.hypot(bx - ax, by - ay) // 6))
            for k in range(0, n, 2):
                p = (int(ax + (bx - ax) * k / n), int(ay + (by - ay) * k / n))
                q = (int(ax + (bx - ax) * (k + 1) / n), int(ay + (by - ay) * (k + 1) / n))
                cv2.line(image, p, q, color, thickness, cv2.LINE_AA)
    else:
        cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
    if label:
        scale = max(0.35, min(0.6, h / 1200))
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 3 if y0 - th - base - 3 >= 0 else min(y1 + th + 3, h - base)
        cv2.rectangle(image, (x0, ty - th - 2), (x0 + tw + 2, ty + base - 1), color, -1)
        cv2.putText(image, label, (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0) if sum(rgb) > 1.5 else (255, 255, 255), 1, cv2.LINE_AA)


__all__ = ["CLASS_COLORS", "FALSE_COLOR", "GT_COLOR", "MISSED_COLOR", "bgr", "class_color", "draw_box",
           "object_label"]
