"""A rider and the bicycle / motorcycle under it as one cyclist box (KITTI's and this project's convention).

COCO detectors (YOLOX) box the person and the two-wheeler separately: mapped through a card's class map that
is a pedestrian standing on a cyclist, two objects where the world has one, and a real rider labelled a
pedestrian in auto-labels. A card with `merge_riders: true` (perception/model_card.py) merges them after NMS:

- a pedestrian *rides* a cyclist (two-wheeler) box of the same camera when the centre of its box lies over
  the two-wheeler's width, its top is above the two-wheeler's top and its bottom reaches at least
  RIDER_MIN_REACH of the way down the two-wheeler's box (feet on the pedals or footrests);
- only a confident two-wheeler takes a rider (score >= RIDER_MIN_VEHICLE_SCORE): on vtest.avi the teacher
  sees a bicycle at 0.12-0.16 in a walking man's legs, which merged would have made him a 0.66 cyclist;
- each two-wheeler takes at most one rider: the two-wheelers best score first, each the free rider that
  covers most of it (intersection over the two-wheeler's area);
- the merged box is the union of the two, class cyclist, score the higher of the two; a two-wheeler without a
  rider stays a cyclist, a pedestrian on no two-wheeler stays a pedestrian.

A person walking beside a bicycle (centre outside its width) stays a pedestrian and the bicycle a cyclist.
"""

from __future__ import annotations

import numpy as np

from perception.detections import Detections
from perception.eval.detection import box_intersection

RIDER_MIN_REACH = 0.3            # of the two-wheeler's box height, from its top: where a rider's feet are at the least
RIDER_MIN_VEHICLE_SCORE = 0.5    # a two-wheeler scored lower keeps its own box (and any person over it theirs)


def rides(rider: np.ndarray, vehicle: np.ndarray) -> np.ndarray:
    """[P, V] whether pedestrian box p rides two-wheeler box v (boxes x0 y0 x1 y1, image pixels)."""
    p, v = rider[:, None, :], vehicle[None, :, :]
    centre_x = (p[..., 0] + p[..., 2]) / 2
    return ((centre_x >= v[..., 0]) & (centre_x <= v[..., 2]) & (p[..., 1] < v[..., 1])
            & (p[..., 3] >= v[..., 1] + RIDER_MIN_REACH * (v[..., 3] - v[..., 1])))


def merge_riders(dets: Detections, pedestrian: int, cyclist: int) -> Detections:
    """`dets` with each rider merged into the two-wheeler it rides (module docstring), best score first."""
    box, score, cls = dets.box.copy(), dets.score.copy(), dets.cls
    gone = np.zeros(len(dets), bool)
    for camera in np.unique(dets.camera):
        rows = np.flatnonzero(dets.camera == camera)
        riders, vehicles = rows[cls[rows] == pedestrian], rows[cls[rows] == cyclist]
        if not riders.size or not vehicles.size:
            continue
        candidate = rides(dets.box[riders], dets.box[vehicles])
        vehicle_box = dets.box[vehicles].astype(np.float64)
        vehicle_area = (vehicle_box[:, 2] - vehicle_box[:, 0]) * (vehicle_box[:, 3] - vehicle_box[:, 1])
        cover = box_intersection(dets.box[riders], vehicle_box) / np.maximum(vehicle_area, 1e-9)
        free = np.ones(riders.size, bool)
        for j in np.argsort(-dets.score[vehicles], kind="stable"):
            if dets.score[vehicles[j]] < RIDER_MIN_VEHICLE_SCORE:
                break
            options = np.flatnonzero(candidate[:, j] & free)
            if not options.size:
                continue
            i = options[np.argmax(cover[options, j])]
            free[i] = False
            r, v = riders[i], vehicles[j]
            box[v] = np.concatenate([np.minimum(box[v, :2], box[r, :2]), np.maximum(box[v, 2:], box[r, 2:])])
            score[v] = max(score[v], score[r])
            gone[r] = True
    keep = np.flatnonzero(~gone)
    merged = Detections(dets.camera, cls, score, box, dets.range_m, dets.image_velocity)
    return merged.select(keep[np.argsort(-score[keep], kind="stable")])

