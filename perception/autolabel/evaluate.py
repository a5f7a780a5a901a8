"""What cleaning buys: a teacher's raw boxes and the cleaned labels, both against a drive's own ground truth.

Both are label sets: the teacher's boxes at or above `min_track_score` (the obvious way to label without
cleaning, ranked by teacher score) and the cleaned labels (every label written, ranked by their `score`:
the teacher's, interpolated across gaps; ranking by track score measured worse).
Scored with the one evaluation protocol (perception/eval, the difficulty level's ignore rules): AP@0.5 per
class, and the precision / recall of the whole set at IoU 0.5. Only for drives whose labels are exact
(synthetic drives, hand-labelled drives), which autolabel replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.autolabel.pipeline import LabelOptions, label_drive
from perception.autolabel.teacher import open_teacher
from perception.errors import DriveError
from perception.eval import MODERATE, Difficulty, ScoredFrame, evaluate_detections
from perception.eval.detection import _greedy_matches, box_iou
from perception.io.drive import DriveReader
from perception.labels import CLASS_INDEX, CLASSES, GroundTruth


@dataclass(frozen=True)
class Scores:
    ap50: dict[str, float]   # per class; NaN: no scored boxes of the class
    precision: float
    recall: float
    labels_per_frame: float


@dataclass(frozen=True)
class CleaningGain:
    drive: str
    frames: int
    raw: Scores
    cleaned: Scores


def evaluate_cleaning(drive_path: str | Path, teacher_path: str | Path, options: LabelOptions,
                      level: Difficulty = MODERATE) -> CleaningGain:
    with DriveReader(drive_path) as drive:
        cameras = options.cameras or drive.cameras
        truth = {(g.camera, g.t_ns): g for g in drive.ground_truth()}
        if not truth:
            raise DriveError(f"{drive_path}: has no ground truth to evaluate against")
        teacher = open_teacher(teacher_path, [drive.rig[c] for c in cameras], options.cleaning.detect_score,
                               threads=options.threads, card=options.teacher_card)
        result = label_drive(drive, teacher, options)
        widths = {c: drive.rig[c].width for c in cameras}
    threshold = options.cleaning.min_track_score
    raw, cleaned = [], []
    for cam in result.cameras:
        labelled = cam.frame_labels(result.teacher_id)
        for f, t in enumerate(cam.t_ns.tolist()):
            gt = truth.get((cam.camera, t))
            if gt is None:
                raise DriveError(f"{drive_path}: camera {cam.camera!r} has no ground truth at {t} ns")
            d = cam.detections[f]
            d = d.select(np.flatnonzero(d.score >= threshold))
            raw.append(_frame(d.box, d.cls, d.score, gt, widths[cam.camera], level))
            boxes = labelled[f].boxes
            cleaned.append(_frame([b.box for b in boxes], [CLASS_INDEX[b.cls] for b in boxes],
                                  [b.auto.score for b in boxes], gt, widths[cam.camera], level))
    return CleaningGain(str(drive_path), len(raw), _scores(raw), _scores(cleaned))


def _frame(box, cls, score, gt: GroundTruth, width: float, level: Difficulty) -> ScoredFrame:
    return ScoredFrame.build(box, cls, score, [b.box for b in gt.boxes], [CLASS_INDEX[b.cls] for b in gt.boxes],
                             [b.occlusion for b in gt.boxes], [b.truncation for b in gt.boxes], width, level)


def _scores(frames: Sequence[ScoredFrame]) -> Scores:
    metrics = evaluate_detections(frames, CLASSES)
    tp = fp = gt = kept = 0
    for f in frames:
        for k in range(len(CLASSES)):
            g = f.gt_cls == k
            gt += int(np.count_nonzero(~f.gt_ignore[g]))
            rows = np.flatnonzero(f.det_cls == k)
            kept += len(rows)
            if not len(rows):
                continue
            rows = rows[np.argsort(-f.det_score[rows], kind="mergesort")]
            matched, on_ignored = _greedy_matches(box_iou(f.det_box[rows], f.gt_box[g]), f.gt_ignore[g])
            m, ig = matched[0], on_ignored[0] | (~matched[0] & f.det_out_of_range[rows])
            tp += int(np.count_nonzero(m & ~ig))
            fp += int(np.count_nonzero(~m & ~ig))
    return Scores(metrics.ap50_by_class(), tp / max(tp + fp, 1), tp / max(gt, 1), kept / max(len(frames), 1))


def format_table(gains: Sequence[CleaningGain]) -> str:
    """Markdown: one row per drive and stage, AP@0.5 of the classes any drive scores, precision, recall."""
    classes = [c for c in CLASSES if any(np.isfinite(g.raw.ap50[c]) for g in gains)]
    head = ["drive", "frames", "labels from"] + [f"AP@0.5 {c}" for c in classes] + ["precision", "recall",
                                                                             "labels / frame"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for g in gains:
        for stage, s in (("teacher", g.raw), ("cleaned", g.cleaned)):
            aps = [f"{s.ap50[c]:.3f}" if np.isfinite(s.ap50[c]) else "-" for c in classes]
            rows.append("| " + " | ".join([Path(g.drive).name, str(g.frames), stage] + aps +
                                          [f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.labels_per_frame:.2f}"])
                        + " |")
    return "\n".join(rows)
