"""Held-out metrics of a model on labelled camera sequences, through an Engine and the Decoder.

Each camera sequence is streamed from a reset state, frame by frame with its real timestamps, exactly as
the node runs. Detections (original camera pixels) are compared with the ground-truth boxes:

- mAP@0.5 per class by the one evaluation protocol (perception/eval, docs/evaluation.md): the COCO
  procedure at each KITTI-style difficulty level (moderate is the headline); ground truth outside the level
  (too small, occluded, truncated, or mostly outside what the network sees) is ignored: matching it is
  neither a hit nor a false positive;
- range: relative error |r_pred - r_gt| / r_gt of true positives at the moderate level (IoU >= 0.5, same
  class, greedy by score),
  median over those with r_gt < 40 m (and over all);
- image velocity: |v_pred - v_gt| in source pixels per second for true positives whose object was also
  labelled in the camera's previous frame (v_gt = box-centre displacement / time step), median.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from perception.decode import DecodeConfig, Decoder
from perception.detections import Detections
from perception.engine.base import Engine
from perception.eval import LEVELS, MODERATE, Difficulty, ScoredFrame, evaluate_detections
from perception.eval.detection import box_iou
from perception.model.dataset import CameraSequence, normalise
from perception.model.targets import source_boxes_to_net

RANGE_LIMIT_M = 40.0


@dataclass
class EvalResult:
    ap: dict[str, float]                       # AP@0.5 per class at the moderate level; NaN: no such object
    gt_counts: dict[str, int]                  # scored (non-ignored) moderate boxes per class
    range_rel_error_median_under_40m: float
    range_rel_error_median: float
    velocity_error_median_px_s: float
    velocity_gt_median_px_s: float             # scale of the velocities being estimated
    frames: int
    matched: int
    map_by_level: dict[str, float]             # mAP@0.5 at easy / moderate / hard

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
                "frames": self.frames, "matched": self.matched,
                **{f"mAP@0.5/{level}": v for level, v in self.map_by_level.items()}}


@dataclass
class FrameResult:
    dets: Detections
    gt_boxes: np.ndarray        # [G,4]
    gt_cls: np.ndarray          # [G]
    gt_range: np.ndarray        # [G] NaN unknown
    gt_velocity: np.ndarray     # [G,2] NaN unknown
    occlusion: np.ndarray       # [G]
    truncation: np.ndarray      # [G]
    visible: np.ndarray         # [G] share of the box inside what the network sees
    image_width: int            # source pixels

    def scored(self, level: Difficulty) -> ScoredFrame:
        return ScoredFrame.build(self.dets.box, self.dets.cls, self.dets.score, self.gt_boxes, self.gt_cls,
                                 self.occlusion, self.truncation, self.image_width, level, self.visible)


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
            visible = source_boxes_to_net(gb, seq.table, with_visibility=True)[1] if boxes else np.zeros(0)
            frames.append(FrameResult(
                dets, gb, np.array([classes.index(b.cls) for b in boxes], np.int64),
                np.array([ranges.get(b.id, np.nan) for b in boxes], np.float64), vel,
                np.array([b.occlusion for b in boxes], np.float64), np.array([b.truncation for b in boxes], np.float64),
                visible, seq.table.source_camera.width))
            prev_centres, prev_t = centres, seq.t_ns[i]
    return frames


def score(frames: list[FrameResult], classes: Sequence[str]) -> EvalResult:
    by_level = {level.name: evaluate_detections([f.scored(level) for f in frames], classes) for level in LEVELS}
    moderate = by_level[MODERATE.name]
    ap = moderate.ap50_by_class()
    counts = {c: int(moderate.gt_count[k]) for k, c in enumerate(classes)}
    rel, rel_all, verr, vgt, matched = [], [], [], [], 0
    for f in frames:
        for d, g in _greedy_matches(f, f.scored(MODERATE).gt_ignore):
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
    return EvalResult(ap, counts, med(rel), med(rel_all), med(verr), med(vgt), len(frames), matched,
                      {name: m.map50 for name, m in by_level.items()})


HEIGHT_BINS_PX = (30.0, 60.0)   # source pixels; under 30 at 960x540 is under two stride-8 cells of a 448-px input


def recall_by_height(frames: Sequence[FrameResult], classes: Sequence[str],
                     min_score: float) -> dict[str, dict[str, list[int]]]:
    """Where recall is lost: per class and box-height bin (source pixels, HEIGHT_BINS_PX), [found, labelled] of
    the moderate level's scored boxes; found = matched at IoU >= 0.5 by a same-class detection of score >=
    `min_score` (greedy by score, as the range figures)."""
    edges = (0.0,) + HEIGHT_BINS_PX + (math.inf,)
    names = [f"<{edges[1]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[1:-2], edges[2:-1])] + [f">={edges[-2]:g}"]
    counts = {c: {n: [0, 0] for n in names} for c in classes}
    for f in frames:
        sub = replace(f, dets=f.dets.select(np.flatnonzero(f.dets.score >= min_score)))
        ignore = f.scored(MODERATE).gt_ignore
        found = {g for _, g in _greedy_matches(sub, ignore)}
        heights = f.gt_boxes[:, 3] - f.gt_boxes[:, 1]
        for g in np.flatnonzero(~ignore):
            b = names[int(np.searchsorted(edges, heights[g], side="right")) - 1]
            cell = counts[classes[int(f.gt_cls[g])]][b]
            cell[0] += int(g in found)
            cell[1] += 1
    return counts


EVAL_SCORE_THRESHOLD = 0.05    # decoder score threshold for AP: the precision-recall curve's low end


def evaluate(engine: Engine, sequences: Sequence[CameraSequence], decode: DecodeConfig | None = None) -> EvalResult:
    decode = decode or DecodeConfig.for_classes(engine.contract.classes, EVAL_SCORE_THRESHOLD)
    return score(run_sequences(engine, sequences, decode), engine.contract.classes)


def _greedy_matches(f: FrameResult, gt_ignore: np.ndarray, iou_min: float = 0.5) -> list[tuple[int, int]]:
    """(detection, ground truth) pairs: by descending score, each to its best unmatched same-class,
    non-ignored box with IoU >= iou_min."""
    keep = np.flatnonzero(~gt_ignore)
    if len(f.dets) == 0 or keep.size == 0:
        return []
    iou = box_iou(f.dets.box, f.gt_boxes[keep])
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
