"""Tracks of one camera in image space, ByteTrack style.

Each track is a constant-velocity Kalman filter on its box [cx, cy, w, h] (pixels, pixels/s). A frame is
matched in two stages with the Hungarian method on 1 - IoU between predicted boxes and detections of the
same class: first the confident detections (score >= high_score) against all tracks, then the weak ones
(low_score <= score < high_score) against the tracks still unmatched, so that a partly occluded object
whose score drops keeps its track. Unmatched confident detections start tentative tracks; a track is
confirmed after `confirm_hits` matches, a tentative track dies on its first miss, a confirmed one coasts
(prediction only) for at most `max_misses` frames of its camera or `max_coast_s` seconds, and only while
its box, clipped to the image, stays at least `MIN_VISIBLE_PX` wide and high (a coasting box that drifts out
of the image or whose predicted size collapses is dropped, so no inverted or outside box is ever published).
Tracks are held as parallel arrays so that a frame is predicted and updated in a few batched calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.detections import Detections
from perception.eval.detection import box_iou
from perception.track import kalman
from perception.track.config import TrackerConfig
from perception.track.matching import gated_assignment

_H_BOX = np.eye(4, 8)                                       # measures cx, cy, w, h
_H_BOX_VELOCITY = np.vstack([np.eye(4, 8), np.eye(2, 8, 4)])  # ... and the head's vcx, vcy
_DIAG = np.arange(6)
MIN_VISIBLE_PX = 1.0  # a track whose box, clipped to the image, is narrower or lower than this is dropped


@dataclass
class CameraStep:
    """What one frame did to a camera's tracks."""
    track_ids: np.ndarray  # [M] int64, tracks that received a detection this frame (new tracks included)
    det_index: np.ndarray  # [M] intp, the row of that detection in the camera's Detections
    dropped: np.ndarray    # [K] int64, tracks removed this frame


class CameraTracker:
    def __init__(self, config: TrackerConfig, image_size: tuple[int, int] | None = None):
        """`image_size` (width, height): boxes are kept inside that image (none: unbounded image plane)."""
        self.config = config
        self.image_size = image_size
        self.t_ns: int | None = None
        self.ids = np.zeros(0, np.int64)
        self.cls = np.zeros(0, np.int32)
        self.x = np.zeros((0, 8))
        self.P = np.zeros((0, 8, 8))
        self.hits = np.zeros(0, np.int64)
        self.misses = np.zeros(0, np.int64)
        self.score = np.zeros(0)
        self.last_hit_ns = np.zeros(0, np.int64)
        self._next_id = 1

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def confirmed(self) -> np.ndarray:
        return self.hits >= self.config.confirm_hits

    @property
    def boxes(self) -> np.ndarray:
        """[N, 4] x0 y0 x1 y1 of the tracks' current estimates."""
        return _to_corners(self.x[:, :4])

    @property
    def image_boxes(self) -> np.ndarray:
        """[N, 4] the boxes clipped to the image (pixel edges: -0.5 .. width - 0.5)."""
        if self.image_size is None:
            return self.boxes
        w, h = self.image_size
        return np.clip(self.boxes, -0.5, np.array([w - 0.5, h - 0.5, w - 0.5, h - 0.5]))

    def step(self, t_ns: int, dets: Detections) -> CameraStep:
        """Advance to this camera frame (t_ns after the previous one) and match its detections."""
        advance([self], [t_ns])
        return self.match(dets)

    def match(self, dets: Detections) -> CameraStep:
        """Match the detections of the frame the tracks were advanced to (`advance`)."""
        cfg = self.config
        t_ns = self.t_ns
        det_box64 = dets.box.astype(np.float64)
        det_boxes = _to_centre(det_box64)
        track_boxes = self.boxes
        high_mask = dets.score >= cfg.high_score
        high = high_mask.nonzero()[0]
        low = ((dets.score >= cfg.low_score) & ~high_mask).nonzero()[0]
        track_free = np.ones(len(self.ids), bool)
        t_high, d_high = self._assign(track_free.nonzero()[0], high, track_boxes, det_box64, dets.cls)
        track_free[t_high] = False
        high_free = np.zeros(len(dets), bool)
        high_free[high] = True
        high_free[d_high] = False
        t_low, d_low = self._assign(track_free.nonzero()[0], low, track_boxes, det_box64, dets.cls)
        track_free[t_low] = False
        t_rows, d_rows = np.concatenate([t_high, t_low]), np.concatenate([d_high, d_low])
        unmatched_tracks = track_free.nonzero()[0]

        self._update(t_rows, det_boxes[d_rows], dets.image_velocity[d_rows], dets.score[d_rows])
        self.hits[t_rows] += 1
        self.misses[t_rows] = 0
        self.last_hit_ns[t_rows] = t_ns
        self.misses[unmatched_tracks] += 1
        matched_ids = self.ids[t_rows]

        clipped = self.image_boxes
        outside = (clipped[:, 2:] - clipped[:, :2] < MIN_VISIBLE_PX).any(1)
        dropped = self._remove((track_free & (self.hits < cfg.confirm_hits)) | (self.misses > cfg.max_misses)
                               | outside)

        # a matched track whose box left the image is gone: its detection is not reported as measuring it
        if len(dropped):
            alive = ~np.isin(matched_ids, dropped)
            matched_ids, d_rows = matched_ids[alive], d_rows[alive]

        births = (high_free & (dets.score >= cfg.new_track_score)).nonzero()[0]
        new_ids = self._start(births, det_boxes[births], dets, t_ns)
        return CameraStep(np.concatenate([matched_ids, new_ids]), np.concatenate([d_rows, births]), dropped)

    def expire(self, t_ns: int) -> np.ndarray:
        """Drop the tracks not matched for longer than max_coast_s at t_ns (a stale camera's included)."""
        return self._remove((t_ns - self.last_hit_ns) * 1e-9 > self.config.max_coast_s)

    def remove(self, ids: np.ndarray) -> None:
        self._remove(np.isin(self.ids, ids))

    def _assign(self, track_rows: np.ndarray, det_rows: np.ndarray, track_boxes: np.ndarray,
               det_boxes: np.ndarray, det_cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(track_rows) == 0 or len(det_rows) == 0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        cost = 1.0 - box_iou(track_boxes[track_rows], det_boxes[det_rows])
        cost[self.cls[track_rows][:, None] != det_cls[det_rows][None, :]] = np.inf
        r, c = gated_assignment(cost, 1.0 - self.config.min_iou)
        return track_rows[r], det_rows[c]

    def _box_noise(self, heights: np.ndarray) -> np.ndarray:
        return np.maximum(self.config.box_noise_min_px, self.config.box_noise_rel * np.abs(heights))

    def _accel_std(self) -> np.ndarray:
        std = np.empty((len(self.x), 4))
        std[:, :2] = self.config.image_accel_std_px_s2
        std[:, 2:] = (self.config.size_accel_std_rel * np.maximum(np.abs(self.x[:, 3]), 1.0))[:, None]
        return std

    def _update(self, rows: np.ndarray, boxes: np.ndarray, image_velocity: np.ndarray, scores: np.ndarray) -> None:
        if len(rows) == 0:
            return
        cfg = self.config
        box_var = self._box_noise(boxes[:, 3]) ** 2
        with_velocity = np.isfinite(image_velocity).all(1) & cfg.use_image_velocity
        with_count = int(with_velocity.sum())
        for use_velocity, count in ((False, len(rows) - with_count), (True, with_count)):
            if count == 0:
                continue
            sel = slice(None) if count == len(rows) else with_velocity == use_velocity
            m = 6 if use_velocity else 4
            R = np.zeros((count, m, m))
            R[:, _DIAG[:4], _DIAG[:4]] = box_var[sel, None]
            if use_velocity:
                R[:, _DIAG[4:], _DIAG[4:]] = cfg.image_velocity_std_px_s ** 2
                z, H = np.concatenate([boxes[sel], image_velocity[sel].astype(np.float64)], 1), _H_BOX_VELOCITY
            else:
                z, H = boxes[sel], _H_BOX
            r = rows[sel]
            self.x[r], self.P[r] = kalman.update(self.x[r], self.P[r], z, R, H)
        a = cfg.score_smoothing
        self.score[rows] = (1 - a) * self.score[rows] + a * scores

    def _start(self, rows: np.ndarray, boxes: np.ndarray, dets: Detections, t_ns: int) -> np.ndarray:
        cfg = self.config
        n = len(rows)
        if n == 0:
            return np.zeros(0, np.int64)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        velocity = dets.image_velocity[rows].astype(np.float64)
        known = np.isfinite(velocity).all(1) & cfg.use_image_velocity
        x = np.zeros((n, 8))
        x[:, :4] = boxes
        x[known, 4:6] = velocity[known]
        var = np.zeros((n, 8))
        var[:, :4] = self._box_noise(boxes[:, 3])[:, None] ** 2
        var[:, 4:] = cfg.initial_image_velocity_std_px_s ** 2
        var[known, 4:6] = cfg.image_velocity_std_px_s ** 2
        self.ids = np.concatenate([self.ids, ids])
        self.cls = np.concatenate([self.cls, dets.cls[rows].astype(np.int32)])
        self.x = np.concatenate([self.x, x])
        self.P = np.concatenate([self.P, var[:, :, None] * np.eye(8)])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.misses = np.concatenate([self.misses, np.zeros(n, np.int64)])
        self.score = np.concatenate([self.score, dets.score[rows].astype(np.float64)])
        self.last_hit_ns = np.concatenate([self.last_hit_ns, np.full(n, t_ns, np.int64)])
        return ids

    def _remove(self, mask: np.ndarray) -> np.ndarray:
        dropped = self.ids[mask]
        if len(dropped) == 0:
            return dropped
        keep = ~mask
        for name in ("ids", "cls", "x", "P", "hits", "misses", "score", "last_hit_ns"):
            setattr(self, name, getattr(self, name)[keep])
        return dropped


def advance(trackers: Sequence[CameraTracker], t_ns: Sequence[int]) -> None:
    """Predict the tracks of several cameras, each to its own frame time, in one batched Kalman call."""
    moving = [(tracker, t) for tracker, t in zip(trackers, t_ns) if len(tracker.ids) and tracker.t_ns is not None]
    if moving:
        counts = [len(tracker.ids) for tracker, _ in moving]
        x, P = kalman.predict(np.concatenate([tracker.x for tracker, _ in moving]),
                              np.concatenate([tracker.P for tracker, _ in moving]),
                              np.repeat([(t - tracker.t_ns) * 1e-9 for tracker, t in moving], counts),
                              np.concatenate([tracker._accel_std() for tracker, _ in moving]), order=2)
        ends = np.cumsum(counts)[:-1]
        for (tracker, _), x_c, P_c in zip(moving, np.split(x, ends), np.split(P, ends)):
            tracker.x, tracker.P = x_c, P_c
    for tracker, t in zip(trackers, t_ns):
        tracker.t_ns = t


def _to_centre(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)


def _to_corners(cwh: np.ndarray) -> np.ndarray:
    return np.concatenate([cwh[:, :2] - cwh[:, 2:] / 2, cwh[:, :2] + cwh[:, 2:] / 2], 1)
