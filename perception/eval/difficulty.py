"""Difficulty levels of labelled boxes, after KITTI's object benchmark (easy / moderate / hard).

KITTI keeps a box at a level when it is tall enough (40 / 25 / 25 px on its 1242-px-wide images), visible
enough (fully / partly / largely occluded) and not truncated too much (15 / 30 / 50 %). Heights here are a
share of the image width, so a level means the same on a 960-px dashcam and a 1920-px camera (and on the
network input, which is a letterbox of the width). Occlusion and truncation are the drives' fractions in
[0, 1] (docs/drive_format.md). A box outside the level is *ignored*: detecting it is neither a hit nor a
false positive (KITTI's "don't care", COCO's ignore flag); an unmatched detection shorter than the level's
minimum is ignored too, so a detector is not punished for seeing smaller objects than the level scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.errors import ConfigError

KITTI_WIDTH_PX = 1242.0


@dataclass(frozen=True)
class Difficulty:
    name: str
    min_height: float       # box height as a share of the image width
    max_occlusion: float    # fraction of the box hidden by other objects
    max_truncation: float   # fraction of the object outside the image
    min_visible: float = 0.5  # share of the box inside the evaluated field of view

    def min_height_px(self, image_width: float) -> float:
        return self.min_height * image_width

    def ignored(self, boxes: np.ndarray, occlusion: np.ndarray, truncation: np.ndarray, image_width: float,
                visible: np.ndarray | None = None) -> np.ndarray:
        """[G] bool: labelled boxes [G, 4] (x0, y0, x1, y1) this level does not score. `visible`: share of each
        box inside what was evaluated (a network's crop); None: the whole image."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        with np.errstate(invalid="ignore"):
            short = ~(boxes[:, 3] - boxes[:, 1] >= self.min_height_px(image_width))
            out = short | (np.asarray(occlusion) > self.max_occlusion) | (np.asarray(truncation) > self.max_truncation)
            if visible is not None:
                out |= ~(np.asarray(visible) >= self.min_visible)
        return out

    def too_small(self, boxes: np.ndarray, image_width: float) -> np.ndarray:
        """[D] bool: detections [D, 4] below the level's height (ignored when they match nothing)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        return boxes[:, 3] - boxes[:, 1] < self.min_height_px(image_width)


EASY = Difficulty("easy", 40.0 / KITTI_WIDTH_PX, 0.15, 0.15)
MODERATE = Difficulty("moderate", 25.0 / KITTI_WIDTH_PX, 0.5, 0.3)
HARD = Difficulty("hard", 25.0 / KITTI_WIDTH_PX, 0.8, 0.5)
LEVELS: tuple[Difficulty, ...] = (EASY, MODERATE, HARD)


def level_named(name: str) -> Difficulty:
    for level in LEVELS:
        if level.name == name:
            return level
    raise ConfigError(f"difficulty: unknown level {name!r} (known: {', '.join(l.name for l in LEVELS)})")
