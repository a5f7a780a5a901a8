"""Training targets: ground-truth boxes (source pixels) -> network-pixel boxes -> dense CenterNet maps.

Uses numpy only. The grid convention is the decoder's (perception/decode/centernet.py): a box centred at
network pixel c lies in cell round((c + 0.5) / s - 0.5) with offset = the remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perception.decode.centernet import image_extent

# regression channels of `FrameTargets.regression`
OFFSET, LOG_SIZE, DISPLACEMENT, LOG_DEPTH = slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 7)
REGRESSION_CHANNELS = 7
# mask channels of `FrameTargets.masks`: box regression (offset + size), displacement, range
MASK_BOX, MASK_DISPLACEMENT, MASK_DEPTH = 0, 1, 2

# edge midpoints (left, top, right, bottom) as fractions of (w, h) from the top-left corner
EDGE_MIDPOINTS = np.array([[0, 0.5], [0.5, 0], [1, 0.5], [0.5, 1]], np.float64)


def source_boxes_to_net(boxes: np.ndarray, table, with_visibility: bool = False):
    """[M,4] source-pixel boxes -> [M,4] network-pixel boxes, clipped to the part of the network input
    that shows the image; NaN rows where nothing maps. With `with_visibility`, also the fraction [M] of
    each unclipped box that lies inside that part (0 where nothing maps).

    Each side goes through the mapping at its midpoint (x0 from the left edge's midpoint, ...), and the
    decoder maps back the same way. Under lens distortion a box's corners bulge outwards; the midpoints
    are where an object's silhouette typically touches its box, and the round trip stays within a pixel
    for boxes of object size (tests/test_decode.py).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    net = edge_points(boxes, table.source_to_net)
    full = np.stack([net[:, 0, 0], net[:, 1, 1], net[:, 2, 0], net[:, 3, 1]], 1)
    lo, hi = image_extent(table)
    clipped = np.clip(full, np.tile(lo, 2), np.tile(hi, 2))
    if not with_visibility:
        return clipped
    with np.errstate(invalid="ignore", divide="ignore"):
        visible = np.nan_to_num(_area(clipped) / _area(full), nan=0.0)
    return clipped, visible


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def edge_points(boxes: np.ndarray, mapping) -> np.ndarray:
    """[M,4] boxes -> [M,4,2]: `mapping` applied to the midpoints of the left, top, right, bottom edges."""
    size = boxes[:, 2:] - boxes[:, :2]
    pts = boxes[:, None, :2] + EDGE_MIDPOINTS[None] * size[:, None, :]
    return mapping(pts.reshape(-1, 2)).reshape(pts.shape)


@dataclass
class NetBox:
    """One object in one frame, in network pixels."""

    cls: int
    box: np.ndarray                   # [4] x0 y0 x1 y1
    track_id: int
    log_depth: float = float("nan")   # ln(z * F / fx) (perception.model.dataset); NaN: unknown
    ignore: bool = False              # too small / occluded: neither positive nor negative


@dataclass
class FrameTargets:
    heatmap: np.ndarray      # [C,h,w] gaussian peaks, exactly 1 at centre cells
    heatmap_weight: np.ndarray  # [h,w] 0 around ignored boxes, else 1
    regression: np.ndarray   # [7,h,w] offset(2) log(size/stride)(2) displacement in cells(2) log_depth(1)
    masks: np.ndarray        # [3,h,w] box / displacement / range supervision at centre cells


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest corner shift keeping IoU >= min_overlap (in cells)."""
    a1, b1, c1 = 1, height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + np.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return float(min(r1, r2, r3))


def cell_of(centre: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Network-pixel centres [...,2] -> (integer cell [...,2], offset in cells [...,2])."""
    cells = (np.asarray(centre, np.float64) + 0.5) / stride - 0.5
    index = np.floor(cells + 0.5)
    return index.astype(np.int64), cells - index


def render_targets(objects: list[NetBox], previous: dict[int, np.ndarray] | None, num_classes: int,
                   feature_size: tuple[int, int], stride: int) -> FrameTargets:
    """Dense targets of one frame. `previous`: track id -> net-pixel centre in the frame the network's
    newest stored feature came from (None: no history, no displacement supervision)."""
    h, w = feature_size
    heatmap = np.zeros((num_classes, h, w), np.float32)
    weight = np.ones((h, w), np.float32)
    reg = np.zeros((REGRESSION_CHANNELS, h, w), np.float32)
    masks = np.zeros((3, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    # big boxes first so that small ones win a shared centre cell
    for obj in sorted(objects, key=lambda o: -(o.box[2] - o.box[0]) * (o.box[3] - o.box[1])):
        bw, bh = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
        if not np.isfinite(obj.box).all() or bw <= 0 or bh <= 0:
            continue
        centre = np.array([(obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2])
        (cx, cy), offset = cell_of(centre, stride)
        cx, cy = int(np.clip(cx, 0, w - 1)), int(np.clip(cy, 0, h - 1))
        radius = max(0.0, gaussian_radius(bh / stride, bw / stride))
        sigma = (2 * int(radius) + 1) / 6
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
        if obj.ignore or bw < 1.0 or bh < 1.0:
            weight[blob > 0.1] = 0.0
            continue
        np.maximum(heatmap[obj.cls], blob.astype(np.float32), out=heatmap[obj.cls])
        heatmap[obj.cls, cy, cx] = 1.0
        weight[cy, cx] = 1.0
        reg[OFFSET, cy, cx] = offset
        reg[LOG_SIZE, cy, cx] = np.log([bw / stride, bh / stride])
        masks[MASK_BOX, cy, cx] = 1.0
        if previous is not None and obj.track_id in previous:
            reg[DISPLACEMENT, cy, cx] = (centre - previous[obj.track_id]) / stride
            masks[MASK_DISPLACEMENT, cy, cx] = 1.0
        else:
            masks[MASK_DISPLACEMENT, cy, cx] = 0.0
        if np.isfinite(obj.log_depth):
            reg[LOG_DEPTH, cy, cx] = obj.log_depth
            masks[MASK_DEPTH, cy, cx] = 1.0
        else:
            masks[MASK_DEPTH, cy, cx] = 0.0
    return FrameTargets(heatmap, weight, reg, masks)
