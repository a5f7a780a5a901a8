"""Held-out metrics of a model on labelled camera sequences, through an Engine and the Decoder.

Each camera sequence is streamed from a reset state, frame by frame with its real timestamps, exactly as
the node runs. Detections (original camera pixels) are compared with the ground-truth boxes:

- mAP@0.5 per class with pycocotools (101-point interpolation); ground truth outside the evaluation rules
  (perception.model.dataset.EVAL_RULES: too small, occluded, truncated, or outside what the network sees)
  is a crowd region: matching it is neither a hit nor a false positive;
- range: relative error |r_pred - r_gt| / r_gt of true positives (IoU >= 0.5, same class, greedy by score),
  median over those with r_gt < 40 m (and over all);
- image velocity: |v_pred - v_gt| in source pixels per second for true positives whose object was also
  labelled in the camera's previous frame (v_gt = box-centre displacement / time step), median.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.decode import DecodeConfig, Decoder
from perception.detections import Detections
from perception.engine.base import Engine
from perception.model.dataset import EVAL_RULES, CameraSequence, is_ignored, normalise

RANGE_LIMIT_M = 40.0


@dataclass
class EvalResult:
    ap: dict[str, float]                       # per class; NaN where the data has no such object
    gt_counts: dict[str, int]                  # evaluated (non-ignored) boxes per class
    range_rel_error_median_under_40m: float
    range_rel_error_median: float
    velocity_error_median_px_s: float
    velocity_gt_median_px_s: float             # scale of the velocities being estimated
    frames: int
    matched: int

    @property
    def mean_ap(self) -> float:
        vals = [v for v in self.ap.values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def as_dict(self) -> dict:
        return {"mAP@0.5": self.mean_ap, **{f"AP@0.5/{k}": v for k, v in self.ap.items()},
                **{f"gt/{k}": v for k, v in self.gt_counts.items()},
                "range_rel_error_median_under_40m": self.range_rel_error_median_under_40m,
                "range_rel_error_median": self.range_rel_error_median,
                "velocity_error_median_px_s": self.velocity_error_median_px_s,
                "velocity_gt_median_px_s": self.velocity_gt_median_px_s,
                "frames": self.frames, "matched": self.matched}


@dataclass
class FrameResult:
    dets: Detections
    gt_boxes: np.ndarray        # [G,4]
    gt_cls: np.ndarray          # [G]
    gt_ignore: np.ndarray       # [G] bool
    gt_range: np.ndarray        # [G] NaN unknown
    gt_velocity: np.ndarray     # [G,2] NaN unknown


def run_sequences(engine: Engine, sequences: Sequence[CameraSequence], decode: DecodeConfig) -> list[FrameResult]:
    """Stream every sequence through `engine` (one camera per call) and decode each frame."""
    classes = list(engine.contract.classes)
    frames = []
    for seq in sequences:
        decoder = Decoder(engine.contract, [seq.table], decode)
        state = engine.initial_state(1)
        prev_centres: dict[int, np.ndarray] = {}
        prev_t = None
        for i in range(len(seq)):
            image = normalise(seq.images[i], seq.table.valid, engine.contract.mean, engine.contract.std)
            heads, state = engine.run(np.ascontiguousarray(image.transpose(2, 0, 1))[None], seq.t_ns[i:i + 1], state)
            dets = decoder(heads)
            gt = seq.labels[i]
            boxes = [b for b in gt.boxes if b.cls in classes]
            ranges = {o.id: o.range for o in gt.objects}
            gb = np.array([b.box for b in boxes], np.float64).reshape(-1, 4)
            centres = {b.id: (gb[k, :2] + gb[k, 2:]) / 2 for k, b in enumerate(boxes)}
            dt = (seq.t_ns[i] - prev_t) * 1e-9 if prev_t is not None else None
            vel = np.array([(centres[b.id] - prev_centres[b.id]) / dt if dt and b.id in prev_centres else (np.nan, np.nan)
                            for b in boxes], np.float64).reshape(-1, 2)
            frames.append(FrameResult(
                dets, gb, np.array([classes.index(b.cls) for b in boxes], np.int64),
                is_ignored(boxes, seq.table, EVAL_RULES),
                np.array([ranges.get(b.id, np.nan) for b in boxes], np.float64), vel))
            prev_centres, prev_t = centres, seq.t_ns[i]
    return frames


def score(frames: list[FrameResult], classes: Sequence[str]) -> EvalResult:
    ap, counts = _coco_ap(frames, classes)
    rel, rel_all, verr, vgt, matched = [], [], [], [], 0
    for f in frames:
        for d, g in _greedy_matches(f):
            matched += 1
            r_gt = f.gt_range[g]
            if np.isfinite(r_gt) and r_gt > 0:
                e = abs(float(f.dets.range_m[d]) - r_gt) / r_gt
                rel_all.append(e)
                if r_gt < RANGE_LIMIT_M:
                    rel.append(e)
            v_gt = f.gt_velocity[g]
            if np.isfinite(v_gt).all() and np.isfinite(f.dets.image_velocity[d]).all():
                verr.append(float(np.linalg.norm(f.dets.image_velocity[d] - v_gt)))
                vgt.append(float(np.linalg.norm(v_gt)))
    med = lambda v: float(np.median(v)) if v else float("nan")  # noqa: E731
    return EvalResult(ap, counts, med(rel), med(rel_all), med(verr), med(vgt), len(frames), matched)


def evaluate(engine: Engine, sequences: Sequence[CameraSequence], decode: DecodeConfig | None = None) -> EvalResult:
    decode = decode or DecodeConfig.for_classes(engine.contract.classes, 0.05)
    return score(run_sequences(engine, sequences, decode), engine.contract.classes)


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _greedy_matches(f: FrameResult, iou_min: float = 0.5) -> list[tuple[int, int]]:
    """(detection, ground truth) pairs: by descending score, each to its best unmatched same-class,
    non-ignored box with IoU >= iou_min."""
    keep = np.flatnonzero(~f.gt_ignore)
    if len(f.dets) == 0 or keep.size == 0:
        return []
    iou = _iou_matrix(f.dets.box.astype(np.float64), f.gt_boxes[keep])
    iou[f.dets.cls[:, None] != f.gt_cls[keep][None, :]] = 0.0
    taken = np.zeros(keep.size, bool)
    pairs = []
    for d in np.argsort(-f.dets.score, kind="stable"):
        cand = np.where(taken, 0.0, iou[d])
        g = int(np.argmax(cand))
        if cand[g] >= iou_min:
            taken[g] = True
            pairs.append((int(d), int(keep[g])))
    return pairs


def _coco_ap(frames: list[FrameResult], classes: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    counts = {c: 0 for c in classes}
    for img_id, f in enumerate(frames):
        images.append({"id": img_id})
        for k in range(len(f.gt_cls)):
            x0, y0, x1, y1 = (float(v) for v in f.gt_boxes[k])
            crowd = int(f.gt_ignore[k])
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(f.gt_cls[k]),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": crowd})
            if not crowd:
                counts[classes[int(f.gt_cls[k])]] += 1
        for d in range(len(f.dets)):
            x0, y0, x1, y1 = (float(v) for v in f.dets.box[d])
            dets.append({"image_id": img_id, "category_id": int(f.dets.cls[d]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "score": float(f.dets.score[d])})
    ap = {c: (float("nan") if counts[c] == 0 else 0.0) for c in classes}
    if not dets:
        return ap, counts
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": i, "name": c} for i, c in enumerate(classes)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, 0]     # [recall, class]
    for k, c in enumerate(classes):
        if counts[c]:
            p = precision[:, k]
            ap[c] = float(np.mean(np.where(p > -1, p, 0.0)))
    return ap, counts
