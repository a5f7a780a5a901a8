"""Tracking metrics: CLEAR MOT (MOTA, ID switches) and IDF1, per camera, with py-motmetrics' procedure
(tests/test_replay_metrics.py checks it against motmetrics).

Per camera, frame by frame (ground-truth box ids vs track ids, a pair may match when IoU >= min_iou):
1. a ground-truth object keeps the track it matched last time if that track is still there and overlaps;
2. the others are matched by a minimum-cost assignment on 1 - IoU (most pairs first);
   a match to another track than the object's last one is an ID switch;
3. unmatched objects are misses, unmatched tracks false positives.
MOTA = 1 - (misses + false positives + switches) / ground-truth boxes. IDF1 = 2 IDTP / (ground-truth boxes
+ track boxes), IDTP from the best one-to-one assignment of object ids to track ids over the whole
sequence (frames in which the pair overlaps). Cameras are independent sequences; the totals add up.
Another camera's view of a fused object (replay/metrics/align.py) is left out, and so are the tracks on it
(IoU >= min_iou: MOTChallenge's distractors).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from replay.metrics.align import EvalImage
from replay.metrics.matching import box_iou


@dataclass(frozen=True)
class TrackingCounts:
    frames: int
    gt: int              # ground-truth boxes
    hyp: int             # track boxes
    matches: int         # matched pairs (including switches)
    misses: int
    false_positives: int
    id_switches: int
    idtp: int            # identity true positives (global id assignment)

    @property
    def mota(self) -> float:
        return 1.0 - (self.misses + self.false_positives + self.id_switches) / self.gt if self.gt else float("nan")

    @property
    def idf1(self) -> float:
        return 2.0 * self.idtp / (self.gt + self.hyp) if self.gt + self.hyp else float("nan")

    def __add__(self, other: "TrackingCounts") -> "TrackingCounts":
        return TrackingCounts(*(a + b for a, b in zip(_values(self), _values(other))))


def _values(c: TrackingCounts) -> tuple[int, ...]:
    return (c.frames, c.gt, c.hyp, c.matches, c.misses, c.false_positives, c.id_switches, c.idtp)


@dataclass(frozen=True)
class TrackingMetrics:
    per_camera: dict[str, TrackingCounts]
    total: TrackingCounts
    switch_ns: list[tuple[str, int]]   # (camera, capture time) of every ID switch


def evaluate_tracking(images: Sequence[EvalImage], min_iou: float = 0.5) -> TrackingMetrics:
    by_camera: dict[str, list[EvalImage]] = defaultdict(list)
    for im in images:
        by_camera[im.camera].append(im)
    per_camera, switches = {}, []
    for camera, sequence in by_camera.items():
        frames = [_without_other_views(im, min_iou) for im in sequence]
        counts, switch_frames = clear_mot(frames, min_iou)
        per_camera[camera] = counts
        switches += [(camera, sequence[i].t_ns) for i in switch_frames]
    total = TrackingCounts(0, 0, 0, 0, 0, 0, 0, 0)
    for counts in per_camera.values():
        total = total + counts
    return TrackingMetrics(per_camera, total, sorted(switches, key=lambda s: s[1]))


def _without_other_views(im: EvalImage, min_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if im.other_view is None:
        return im.gt_ids, im.gt_boxes, im.det.track_id, im.det.box
    kept, scored = ~im.on_other_view(min_iou), im.scored_view
    return im.gt_ids[scored], im.gt_boxes[scored], im.det.track_id[kept], im.det.box[kept]


def clear_mot(frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
              min_iou: float = 0.5) -> tuple[TrackingCounts, list[int]]:
    """CLEAR MOT and identity counts of one sequence of (gt ids, gt boxes, track ids, track boxes) frames;
    also the indices of the frames with an ID switch."""
    last: dict[int, int] = {}          # object id -> track id it matched last
    pair_frames: Counter = Counter()   # (object id, track id) -> frames in which they overlap
    gt_total = hyp_total = matches = misses = false_positives = switches = 0
    switch_frames = []
    for index, (oids, oboxes, hids, hboxes) in enumerate(frames):
        oids = [int(o) for o in oids]
        hids = [int(h) for h in hids]
        no, nh = len(oids), len(hids)
        gt_total += no
        hyp_total += nh
        valid = (1.0 - box_iou(oboxes, hboxes)) <= 1.0 - min_iou  # as a distance: 1 - IoU <= 1 - min_iou
        for i, j in zip(*np.nonzero(valid)):
            pair_frames[(oids[i], hids[j])] += 1
        o_done = np.zeros(no, bool)
        h_done = np.zeros(nh, bool)
        if no and nh:
            for i, o in enumerate(oids):               # 1. keep last frame's pairs
                if o not in last:
                    continue
                js = [j for j in range(nh) if not h_done[j] and hids[j] == last[o]]
                if js and valid[i, js[0]]:
                    o_done[i] = h_done[js[0]] = True
                    matches += 1
            cost = 1.0 - box_iou(oboxes, hboxes)       # 2. assign the rest
            free = valid & ~o_done[:, None] & ~h_done[None, :]
            for i, j in zip(*_assign(cost, free)):
                o, h = oids[i], hids[j]
                if o in last and last[o] != h:
                    switches += 1
                    if not switch_frames or switch_frames[-1] != index:
                        switch_frames.append(index)
                last[o] = h
                o_done[i] = h_done[j] = True
                matches += 1
        misses += int((~o_done).sum())
        false_positives += int((~h_done).sum())
    idtp = _identity_true_positives(pair_frames)
    return TrackingCounts(len(frames), gt_total, hyp_total, matches, misses, false_positives, switches,
                          idtp), switch_frames


def _assign(cost: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment over the valid pairs, as many pairs as possible (an invalid pair costs more
    than any set of valid ones: motmetrics' construction, so ties resolve the same way)."""
    if not valid.any():
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    c = np.abs(cost[valid]).max() + 1
    rows, cols = linear_sum_assignment(np.where(valid, cost, 2 * min(cost.shape) * c + 1))
    keep = valid[rows, cols]
    return rows[keep], cols[keep]


def _identity_true_positives(pair_frames: Counter) -> int:
    if not pair_frames:
        return 0
    oids = sorted({o for o, _ in pair_frames})
    hids = sorted({h for _, h in pair_frames})
    oi = {o: i for i, o in enumerate(oids)}
    hi = {h: j for j, h in enumerate(hids)}
    weights = np.zeros((len(oids), len(hids)))
    for (o, h), n in pair_frames.items():
        weights[oi[o], hi[h]] = n
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return int(weights[rows, cols].sum())
