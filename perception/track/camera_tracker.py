"""Tracks of each camera in image space, ByteTrack style.

Each track is a constant-velocity Kalman filter on its box [cx, cy, w, h] (pixels, pixels/s). A frame is
matched in two stages with the Hungarian method on 1 - IoU between predicted boxes and detections of the
same class: first the confident detections (score >= high_score) against all tracks, then the weak ones
(low_score <= score < high_score) against the tracks still unmatched, so that a partly occluded object
whose score drops keeps its track. A third stage matches the confident detections still unmatched to the
tracks still unmatched by the squared Mahalanobis distance between the detection's centre and the track's
predicted one (gated at `centre_gate_chi2`, box heights within 1.5x): a narrow object that moves more than
its width per frame (a pedestrian crossing a side camera's view while the ego drives: 40-85 px per frame
at 10 Hz against 12-20 px of width) overlaps its predicted box in no frame, and would otherwise start a new
track every frame and never be confirmed. Unmatched confident detections start tentative tracks; a track is
confirmed after `confirm_hits` matches, a tentative track dies on its first miss, a confirmed one coasts
(prediction only) for at most `max_misses` frames of its camera or `max_coast_s` seconds, and only while
its box, clipped to the image, stays at least `MIN_VISIBLE_PX` wide and high (a coasting box that drifts out
of the image or whose predicted size collapses is dropped, so no inverted or outside box is ever published).
The tracks of all cameras of a rig are held as one table of parallel arrays (a camera column; ids counted per
camera), so that a frame set is predicted, matched, updated and pruned in a few batched calls: each matching
stage is one assignment over all cameras' tracks and detections, pairs of different cameras forbidden, whose
optimum is each camera's own. `CameraTracker` is the table of a single camera.
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

_DIAG = np.arange(6)
MIN_VISIBLE_PX = 1.0  # a track whose box, clipped to the image, is narrower or lower than this is dropped


@dataclass
class CameraStep:
    """What one frame did to a camera's tracks."""
    track_ids: np.ndarray  # [M] int64, tracks that received a detection this frame (new tracks included)
    det_index: np.ndarray  # [M] intp, the row of that detection in the camera's Detections
    dropped: np.ndarray    # [K] int64, tracks removed this frame


class ImageTracks:
    """The image tracks of several cameras as one table (row r: a track of camera `camera[r]`)."""

    def __init__(self, config: TrackerConfig, image_sizes: Sequence[tuple[int, int] | None]):
        """`image_sizes[c]` (width, height): camera c's boxes are kept inside that image (none: unbounded)."""
        self.config = config
        self.t_ns: list[int | None] = [None] * len(image_sizes)  # each camera's last frame
        # per camera: the box clip limits (x0 y0 x1 y1 low, then high; pixel edges -0.5 .. size - 0.5)
        self._limits = np.array([[-np.inf] * 4 + [np.inf] * 4 if size is None else
                                 [-0.5] * 4 + [size[0] - 0.5, size[1] - 0.5] * 2 for size in image_sizes])
        self._limits = self._limits.reshape(-1, 8)
        self._next_id = [1] * len(image_sizes)
        self.camera = np.zeros(0, np.intp)
        self.ids = np.zeros(0, np.int64)
        self.cls = np.zeros(0, np.int32)
        self.x = np.zeros((0, 8))
        self.P = np.zeros((0, 8, 8))
        self.hits = np.zeros(0, np.int64)
        self.misses = np.zeros(0, np.int64)
        self.score = np.zeros(0)
        self.last_hit_ns = np.zeros(0, np.int64)

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
        """[N, 4] the boxes clipped to their camera's image."""
        limits = self._limits[self.camera]
        return np.clip(self.boxes, limits[:, :4], limits[:, 4:])

    def step(self, frames: Sequence[tuple[int, int, Detections]]) -> list[CameraStep]:
        """Advance cameras to their frames (camera, t_ns, detections), each t_ns after that camera's previous
        one, and match the frames' detections."""
        if not frames:
            return []
        cfg = self.config
        frame_of = np.full(len(self.t_ns), -1, np.intp)  # camera -> its frame's index in `frames`
        frame_of[[c for c, _, _ in frames]] = np.arange(len(frames))
        track_frame = frame_of[self.camera]
        stepped = track_frame >= 0
        self._predict(frames)
        # the frames' detections as one table, frame by frame
        counts = [len(dets) for _, _, dets in frames]
        starts = np.cumsum(counts) - counts
        det_frame = np.repeat(np.arange(len(frames)), counts)
        box = np.concatenate([dets.box for _, _, dets in frames]).astype(np.float64)
        centres = _to_centre(box)
        score = np.concatenate([dets.score for _, _, dets in frames])
        cls = np.concatenate([dets.cls for _, _, dets in frames])
        velocity = np.concatenate([dets.image_velocity for _, _, dets in frames])
        high_mask = score >= cfg.high_score
        # matching cost of every stepped track and detection, 1 - IoU; pairs of different frames or classes: inf
        candidates = stepped.nonzero()[0]
        cost = 1.0 - box_iou(self.boxes[candidates], box)
        cost[(track_frame[candidates][:, None] != det_frame[None, :])
             | (self.cls[candidates][:, None] != cls[None, :])] = np.inf
        unmatched = np.ones(len(candidates), bool)
        t_high, d_high = self._assign(cost, unmatched.nonzero()[0], high_mask.nonzero()[0])
        unmatched[t_high] = False
        low = ((score >= cfg.low_score) & ~high_mask).nonzero()[0]
        t_low, d_low = self._assign(cost, unmatched.nonzero()[0], low)
        unmatched[t_low] = False
        high_mask[d_high] = False
        t_far, d_far = self._assign_by_centre(candidates, unmatched.nonzero()[0], high_mask.nonzero()[0], cost,
                                              centres)
        high_mask[d_far] = False
        t_high, d_high = np.concatenate([t_high, t_far]), np.concatenate([d_high, d_far])
        t_high, t_low = candidates[t_high], candidates[t_low]
        free = stepped.copy()
        free[t_high] = False
        free[t_low] = False
        births = (high_mask & (score >= cfg.new_track_score)).nonzero()[0]
        # frame by frame (in `frames` order), its confident matches, then its weak ones
        by_frame = np.argsort(det_frame[np.concatenate([d_high, d_low])], kind="stable")
        t_rows, d_rows = np.concatenate([t_high, t_low])[by_frame], np.concatenate([d_high, d_low])[by_frame]
        self._update(t_rows, centres[d_rows], velocity[d_rows], score[d_rows])
        self.hits[t_rows] += 1
        self.misses[t_rows] = 0
        self.last_hit_ns[t_rows] = np.array([t_ns for _, t_ns, _ in frames], np.int64)[det_frame[d_rows]]
        self.misses[free] += 1
        matched_ids = self.ids[t_rows]

        clipped = self.image_boxes
        outside = (clipped[:, 2:] - clipped[:, :2] < MIN_VISIBLE_PX).any(1)
        drop = stepped & ((free & (self.hits < cfg.confirm_hits)) | (self.misses > cfg.max_misses) | outside)
        # a matched track whose box left the image is gone: its detection is not reported as measuring it
        alive = ~drop[t_rows]
        dropped = self._remove(drop)
        new_ids = self._start(frames, det_frame[births], box[births], velocity[births], cls[births], score[births])
        match_bounds = np.searchsorted(det_frame[d_rows], np.arange(len(frames) + 1)).tolist()
        birth_bounds = np.searchsorted(det_frame[births], np.arange(len(frames) + 1)).tolist()
        out = []
        for k, (c, _, _) in enumerate(frames):
            m = slice(match_bounds[k], match_bounds[k + 1])
            keep = alive[m]
            out.append(CameraStep(np.concatenate([matched_ids[m][keep], new_ids[k]]),
                                  np.concatenate([d_rows[m][keep], births[birth_bounds[k]:birth_bounds[k + 1]]])
                                  - starts[k], dropped[c]))
        return out

    def expire(self, t_ns: int) -> list[np.ndarray]:
        """Drop the tracks not matched for longer than max_coast_s at t_ns (a stale camera's included); the
        dropped ids of each camera."""
        return self._remove((t_ns - self.last_hit_ns) * 1e-9 > self.config.max_coast_s)

    def remove(self, camera: int, ids: np.ndarray) -> None:
        """Drop tracks `ids` of `camera`."""
        self._remove((self.camera == camera) & (self.ids[:, None] == np.asarray(ids)[None, :]).any(1))

    def _predict(self, frames: Sequence[tuple[int, int, Detections]]) -> None:
        """Predict the stepped cameras' tracks, each camera's by its own frame interval."""
        dt = np.zeros(len(self.t_ns))
        moving = np.zeros(len(self.t_ns), bool)
        for c, t_ns, _ in frames:
            if self.t_ns[c] is not None:
                dt[c], moving[c] = (t_ns - self.t_ns[c]) * 1e-9, True
            self.t_ns[c] = t_ns
        rows = moving[self.camera]
        if rows.any():
            every = rows.all()
            sel = slice(None) if every else rows
            x, P = kalman.predict(self.x[sel], self.P[sel], dt[self.camera[sel]], self._accel_std(self.x[sel]),
                                  order=2)
            if every:
                self.x, self.P = x, P
            else:
                self.x[sel], self.P[sel] = x, P

    def _assign(self, cost: np.ndarray, track_rows: np.ndarray, det_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gated minimum-cost matching of some rows (tracks) and columns (detections) of `cost`."""
        r, c = gated_assignment(cost[np.ix_(track_rows, det_rows)], 1.0 - self.config.min_iou)
        return track_rows[r], det_rows[c]

    def _assign_by_centre(self, candidates: np.ndarray, track_rows: np.ndarray, det_rows: np.ndarray,
                          cost: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The third stage: rows of `cost` (tracks `candidates[row]`) and its columns (detections, boxes
        `centres` as cx, cy, w, h) paired by the gated squared Mahalanobis distance of the centres; pairs
        `cost` forbids (other frame or class) stay forbidden."""
        gate = self.config.centre_gate_chi2
        if gate <= 0 or not len(track_rows) or not len(det_rows):
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        tracks = candidates[track_rows]
        x, z = self.x[tracks], centres[det_rows]
        box_var = self._box_noise(z[:, 3]) ** 2
        d2 = kalman.mahalanobis2(x, self.P[tracks], z[:, :2], box_var[:, None, None] * np.eye(2))
        ratio = z[None, :, 3] / np.maximum(np.abs(x[:, None, 3]), 1.0)
        d2[~np.isfinite(cost[np.ix_(track_rows, det_rows)]) | (ratio < 1 / 1.5) | (ratio > 1.5)] = np.inf
        r, c = gated_assignment(d2, gate)
        return track_rows[r], det_rows[c]

    def _box_noise(self, heights: np.ndarray) -> np.ndarray:
        return np.maximum(self.config.box_noise_min_px, self.config.box_noise_rel * np.abs(heights))

    def _accel_std(self, x: np.ndarray) -> np.ndarray:
        std = np.empty((len(x), 4))
        std[:, :2] = self.config.image_accel_std_px_s2
        std[:, 2:] = (self.config.size_accel_std_rel * np.maximum(np.abs(x[:, 3]), 1.0))[:, None]
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
                z = np.concatenate([boxes[sel], image_velocity[sel].astype(np.float64)], 1)  # cx, cy, w, h, vcx, vcy
            else:
                z = boxes[sel]
            r = rows[sel]
            self.x[r], self.P[r] = kalman.update(self.x[r], self.P[r], z, R)
        a = cfg.score_smoothing
        self.score[rows] = (1 - a) * self.score[rows] + a * scores

    def _start(self, frames: Sequence[tuple[int, int, Detections]], frame: np.ndarray, boxes: np.ndarray,
               velocity: np.ndarray, cls: np.ndarray, score: np.ndarray) -> list[np.ndarray]:
        """New tracks from detections of frames[frame[i]] (boxes x0 y0 x1 y1, frame non-decreasing); their
        ids, per frame."""
        cfg = self.config
        counts = np.bincount(frame, minlength=len(frames)).tolist()
        ids = []
        for (c, _, _), count in zip(frames, counts):
            ids.append(np.arange(self._next_id[c], self._next_id[c] + count, dtype=np.int64))
            self._next_id[c] += count
        n = len(frame)
        if n == 0:
            return ids
        boxes = _to_centre(boxes)
        velocity = velocity.astype(np.float64)
        known = np.isfinite(velocity).all(1) & cfg.use_image_velocity
        x = np.zeros((n, 8))
        x[:, :4] = boxes
        x[known, 4:6] = velocity[known]
        var = np.zeros((n, 8))
        var[:, :4] = self._box_noise(boxes[:, 3])[:, None] ** 2
        var[:, 4:] = cfg.initial_image_velocity_std_px_s ** 2
        var[known, 4:6] = cfg.image_velocity_std_px_s ** 2
        self.camera = np.concatenate([self.camera, np.array([c for c, _, _ in frames], np.intp)[frame]])
        self.ids = np.concatenate([self.ids, *ids])
        self.cls = np.concatenate([self.cls, cls.astype(np.int32)])
        self.x = np.concatenate([self.x, x])
        self.P = np.concatenate([self.P, var[:, :, None] * np.eye(8)])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.misses = np.concatenate([self.misses, np.zeros(n, np.int64)])
        self.score = np.concatenate([self.score, score.astype(np.float64)])
        self.last_hit_ns = np.concatenate([self.last_hit_ns, np.array([t for _, t, _ in frames], np.int64)[frame]])
        return ids

    def _remove(self, mask: np.ndarray) -> list[np.ndarray]:
        """Drop the rows of mask; the dropped ids of each camera."""
        if not mask.any():
            return [np.zeros(0, np.int64)] * len(self.t_ns)
        dropped = [self.ids[mask & (self.camera == c)] for c in range(len(self.t_ns))]
        keep = ~mask
        for name in ("camera", "ids", "cls", "x", "P", "hits", "misses", "score", "last_hit_ns"):
            setattr(self, name, getattr(self, name)[keep])
        return dropped


class CameraTracker:
    """The tracks of a single camera."""

    def __init__(self, config: TrackerConfig, image_size: tuple[int, int] | None = None):
        """`image_size` (width, height): boxes are kept inside that image (none: unbounded image plane)."""
        self.tracks = ImageTracks(config, [image_size])

    def __len__(self) -> int:
        return len(self.tracks)

    def step(self, t_ns: int, dets: Detections) -> CameraStep:
        """Advance to this camera frame (t_ns after the previous one) and match its detections."""
        return self.tracks.step([(0, t_ns, dets)])[0]


def _to_centre(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)


def _to_corners(cwh: np.ndarray) -> np.ndarray:
    return np.concatenate([cwh[:, :2] - cwh[:, 2:] / 2, cwh[:, :2] + cwh[:, 2:] / 2], 1)
