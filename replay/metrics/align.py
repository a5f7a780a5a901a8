"""Pairs the node's outputs with the drive's ground truth.

Detections are in original camera pixels with a camera index; ground truth is one message per camera
frame. A frame set used camera c's frame captured at `diag.capture_ns[c]`, so its objects of camera c are
scored against the ground truth of (c, capture_ns[c]). A camera marked stale in a frame set used no new
frame; it is skipped there (its frame was scored with the frame set that first used it). Labelled frames
inside the run's time span that no frame set used (dropped) are scored with no detections.

An object the node fuses across cameras is published once, with the box of one camera, so each labelled
object is scored once per frame set: where an object with a 3D label (`objects`: exact labels, whose ids
name one object in every camera) is seen by several cameras of a frame set, the view that a published box
of its class overlaps best (IoU >= min_iou) is scored, else its most visible view; the others are *other
views* (`EvalImage.other_view`): neither hit nor miss. Boxes without a 3D label (auto labels: ids of
per-camera tracks) and the boxes of unused frames (no frame set fused them) are always scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from perception.labels import CLASS_INDEX, GroundTruth, GroundTruthObject
from perception.messaging.schemas import DetectionsMessage
from perception.io.run_file import RecordedMessage
from replay.metrics.matching import box_iou


@dataclass(frozen=True)
class ImageDetections:
    """The objects of one camera in one frame set; `cls` indexes perception.labels.CLASSES."""
    track_id: np.ndarray  # [N] int64
    cls: np.ndarray       # [N] int64
    score: np.ndarray     # [N] float64
    box: np.ndarray       # [N, 4] float64
    range_m: np.ndarray   # [N] float64
    velocity: np.ndarray  # [N, 3] float64
    ttc_s: np.ndarray     # [N] float64
    coasting: np.ndarray  # [N] bool

    def __len__(self) -> int:
        return len(self.track_id)

    @staticmethod
    def empty() -> "ImageDetections":
        return ImageDetections(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)),
                               np.zeros(0), np.zeros((0, 3)), np.zeros(0), np.zeros(0, bool))


@dataclass(frozen=True)
class EvalImage:
    """One labelled camera frame and what the node reported for it."""
    camera: str
    t_ns: int                 # capture time
    gt: GroundTruth
    det: ImageDetections
    frame_ns: int | None      # the frame set that used this frame; None: no frame set did (dropped)
    other_view: np.ndarray | None = None  # [G] bool: view of an object scored in another camera; None: none

    @property
    def gt_boxes(self) -> np.ndarray:
        return np.array([b.box for b in self.gt.boxes], np.float64).reshape(-1, 4)

    @property
    def gt_cls(self) -> np.ndarray:
        return np.array([CLASS_INDEX[b.cls] for b in self.gt.boxes], np.int64)

    @property
    def gt_ids(self) -> np.ndarray:
        return np.array([b.id for b in self.gt.boxes], np.int64)

    @property
    def scored_view(self) -> np.ndarray:
        """[G] bool: the labelled boxes scored in this image (not another camera's view of the object)."""
        return np.ones(len(self.gt.boxes), bool) if self.other_view is None else ~self.other_view

    def on_other_view(self, min_iou: float) -> np.ndarray:
        """[N] bool: the detections on another camera's view of an object (IoU >= min_iou, any class): neither
        hits nor false positives."""
        if self.other_view is None:
            return np.zeros(len(self.det), bool)
        return (box_iou(self.det.box, self.gt_boxes[self.other_view]) >= min_iou).any(axis=1)


def detections_of(message: DetectionsMessage, camera: int) -> ImageDetections:
    """The objects of camera index `camera` in one frame set (classes outside CLASSES left out)."""
    o = message.objects
    known = np.array([CLASS_INDEX.get(name, -1) for name in message.classes], np.int64)
    cls = known[o.cls] if len(o) else np.zeros(0, np.int64)
    rows = np.flatnonzero((o.camera == camera) & (cls >= 0))
    return ImageDetections(o.track_id[rows].astype(np.int64), cls[rows], o.score[rows].astype(np.float64),
                           o.box[rows].astype(np.float64), o.range_m[rows].astype(np.float64),
                           o.velocity[rows].astype(np.float64), o.ttc_s[rows].astype(np.float64),
                           o.coasting[rows].copy())


def align(detections: Sequence[RecordedMessage], ground_truth: Iterable[GroundTruth],
          cameras: Sequence[str], min_iou: float = 0.5) -> list[EvalImage]:
    """The labelled frames within the run's time span, in (time, rig camera order), each with its detections
    and its other views (module docstring; `min_iou`: the matching IoU). Objects of classes outside
    perception.labels.CLASSES are not scored."""
    if not detections:
        return []
    first = detections[0].message
    started = [int(t) for t in first.diag.capture_ns if t >= 0]
    start_ns = min(started) if started else first.frame_ns
    last = detections[-1].message
    end_ns = max(last.frame_ns, int(last.diag.capture_ns.max()) if len(last.diag.capture_ns) else -1)
    used: dict[tuple[str, int], tuple[int, ImageDetections]] = {}
    for recorded in detections:
        m = recorded.message
        for c, camera in enumerate(m.diag.cameras):
            t = int(m.diag.capture_ns[c])
            if t < 0 or m.stale[c] or (camera, t) in used:
                continue
            used[(camera, t)] = (m.frame_ns, detections_of(m, c))
    order = {name: i for i, name in enumerate(cameras)}
    images = []
    for gt in ground_truth:
        if not start_ns <= gt.t_ns <= end_ns or gt.camera not in order:
            continue
        frame_ns, det = used.get((gt.camera, gt.t_ns), (None, ImageDetections.empty()))
        images.append(EvalImage(gt.camera, gt.t_ns, gt, det, frame_ns))
    images.sort(key=lambda im: (im.t_ns, order[im.camera]))
    return mark_other_views(images, min_iou)


def mark_other_views(images: list[EvalImage], min_iou: float) -> list[EvalImage]:
    """`images` with `other_view` set where a 3D-labelled object has several views in one frame set."""
    views: dict[tuple[int, int], list[tuple[tuple[bool, float, float], int, int]]] = {}
    for i, im in enumerate(images):
        if im.frame_ns is None or not im.gt.boxes:
            continue
        fused = {o.id for o in im.gt.objects}
        gt_boxes, gt_cls = im.gt_boxes, im.gt_cls
        if len(im.det):
            iou = np.where(im.det.cls[:, None] == gt_cls[None, :], box_iou(im.det.box, gt_boxes), 0.0).max(0)
        else:
            iou = np.zeros(len(gt_boxes))
        for g, b in enumerate(im.gt.boxes):
            if b.id in fused:
                visible = (b.box[3] - b.box[1]) * (1.0 - b.occlusion) * (1.0 - b.truncation)
                rank = (bool(iou[g] >= min_iou), float(iou[g]), visible)
                views.setdefault((im.frame_ns, b.id), []).append((rank, i, g))
    other = {i: np.zeros(len(im.gt.boxes), bool) for i, im in enumerate(images)}
    for group in views.values():
        if len(group) > 1:
            best = max(group, key=lambda v: v[0])
            for view in group:
                if view is not best:
                    other[view[1]][view[2]] = True
    return [replace(im, other_view=other[i]) if other[i].any() else im for i, im in enumerate(images)]


def footprint_half_x(obj: GroundTruthObject) -> float:
    """Half of the object's footprint extent along the vehicle x axis."""
    length, width = obj.size[0], obj.size[1]
    return abs(length / 2 * math.cos(obj.yaw)) + abs(width / 2 * math.sin(obj.yaw))


def gap_and_ttc(obj: GroundTruthObject, ego_front_m: float) -> tuple[float, float]:
    """Ground-truth gap from the ego front bumper to the object's nearest edge along x (m) and time to
    collision (s): gap / closing speed, +inf when not closing or not ahead (the node's definitions)."""
    x, vx = obj.position[0], obj.velocity[0]
    if x <= ego_front_m:
        return math.inf, math.inf
    gap = max(0.0, x - footprint_half_x(obj) - ego_front_m)
    closing = -vx
    return gap, (gap / closing if closing > 0 else math.inf)
