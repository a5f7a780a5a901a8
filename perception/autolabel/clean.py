"""Temporal cleaning of a teacher's detections of one camera: tracks, then per-track repair (pure core).

1. Association: the node's per-camera image tracker (`perception.track.camera_tracker.CameraTracker`,
   ByteTrack-style two-stage IoU matching on constant-velocity box filters) links the detections of
   successive frames. It needs no calibration (it works in pixels), so the uncalibrated default camera of
   a video is no obstacle. It matches within a class by default; with `class_agnostic` it links every
   class (so a teacher flickering between car and truck keeps one track) after merging detections of
   another class on the same object (IoU >= `duplicate_iou`; class-wise NMS keeps such pairs) into the
   higher-scored one, and votes the class. On synthetic drives class-strict matching measured better
   (docs/autolabel.md). Tracks coast `max_gap` frames.
2. Per track: dropped when it has fewer than `min_frames` teacher detections or a mean teacher score
   (its `track_score`) under `min_track_score`; gaps of up to `max_gap` frames filled by interpolating
   the boxes linearly in capture time; every box coordinate smoothed with a Savitzky-Golay filter over
   `smooth_frames` frames (a local polynomial of degree `smooth_order`: steady motion passes unchanged);
   one class for the whole track, the class with the highest summed teacher score (merged duplicates
   included; with class-strict matching the track's only class).
Track ids are those of the tracker: deterministic for the same detections and configuration, so a
corrections file written against one run applies to the next (docs/autolabel.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import savgol_filter

from perception.config_base import ConfigBase, param
from perception.detections import Detections
from perception.eval.detection import box_iou
from perception.labels import CLASSES
from perception.track.camera_tracker import CameraTracker
from perception.track.config import TrackerConfig

TEACHER, INTERPOLATED, CORRECTED = 0, 1, 2  # Track.origin codes = indices into perception.labels.AUTO_ORIGINS


@dataclass(frozen=True)
class CleaningConfig(ConfigBase):
    """Teacher threshold, association and per-track repair of `perception autolabel` (docs/autolabel.md)."""

    detect_score: float = param(0.1, "teacher detections below this score are not used at all", gt=0.0, le=1.0)
    track_score: float = param(0.4, "detections at or above this score are matched first and may start tracks",
                               gt=0.0, le=1.0)
    min_iou: float = param(0.2, "minimum IoU between a track's predicted box and a detection to link them",
                           gt=0.0, lt=1.0)
    min_frames: int = param(3, "tracks with fewer teacher detections than this are dropped", ge=1)
    min_track_score: float = param(0.4, "tracks whose mean teacher score is below this are dropped", ge=0.0, le=1.0)
    max_gap: int = param(2, "longest run of frames without a detection that a track bridges (filled by "
                         "interpolation)", unit="frames", ge=0)
    smooth_frames: int = param(5, "window of the box smoothing (odd; 1 = none)", unit="frames", ge=1)
    smooth_order: int = param(1, "degree of the smoothing polynomial", ge=0)
    class_agnostic: bool = param(False, "link detections of any class into one track (its class is voted); "
                                 "default off: on synthetic drives it merged objects of different classes")
    duplicate_iou: float = param(0.7, "class-agnostic: a detection overlapping a higher-scored one of another "
                                 "class this much is the same object (it only votes for its class)", gt=0.0, le=1.0)

    def check(self) -> None:
        if self.detect_score > self.track_score:
            raise self.invalid("detect_score", f"must be <= track_score ({self.track_score}), got {self.detect_score}")
        if self.smooth_frames % 2 == 0:
            raise self.invalid("smooth_frames", f"must be odd, got {self.smooth_frames}")
        if self.smooth_frames > 1 and self.smooth_order >= self.smooth_frames:
            raise self.invalid("smooth_order", f"must be < smooth_frames ({self.smooth_frames}), got {self.smooth_order}")

    def tracker_config(self) -> TrackerConfig:
        return TrackerConfig(high_score=self.track_score, low_score=self.detect_score,
                             new_track_score=self.track_score, min_iou=self.min_iou, confirm_hits=1,
                             max_misses=self.max_gap, max_coast_s=1.0e9)  # gaps count in frames, not seconds


@dataclass
class Track:
    """One object's labels on one camera: frame indices (into the camera's processed frames), increasing."""

    id: int
    cls: int
    frame: np.ndarray        # [n] int64
    box: np.ndarray          # [n, 4] float64, x0 y0 x1 y1, camera pixels (pixel edges)
    score: np.ndarray        # [n] float64 teacher score (interpolated boxes: interpolated)
    origin: np.ndarray       # [n] int8: TEACHER | INTERPOLATED | CORRECTED
    track_score: float       # mean teacher score of the track's detections

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def select(self, keep: np.ndarray) -> "Track":
        return Track(self.id, self.cls, self.frame[keep], self.box[keep], self.score[keep], self.origin[keep],
                     self.track_score)


def associate(t_ns: Sequence[int], detections: Sequence[Detections], config: CleaningConfig) -> list[Track]:
    """Raw tracks (teacher boxes, no repair) of one camera's frames, in order of their first frame.
    `cls` is the score-voted class; detections under `detect_score` and unlinked weak ones are left out."""
    tracker = CameraTracker(config.tracker_config())
    rows: dict[int, list[tuple[int, np.ndarray, float]]] = {}
    votes: dict[int, np.ndarray] = {}
    for index, (t, dets) in enumerate(zip(t_ns, detections)):
        dets = dets.select(np.flatnonzero(dets.score >= config.detect_score))
        if config.class_agnostic:
            dets, frame_votes = _merge_duplicates(dets, config.duplicate_iou)
            dets_for_tracker = Detections(dets.camera, np.zeros_like(dets.cls), dets.score, dets.box, dets.range_m,
                                          dets.image_velocity)
        else:
            frame_votes = np.eye(len(CLASSES))[dets.cls] * dets.score[:, None]
            dets_for_tracker = dets
        step = tracker.step(int(t), dets_for_tracker)
        for track_id, d in zip(step.track_ids.tolist(), step.det_index.tolist()):
            rows.setdefault(track_id, []).append((index, dets.box[d].astype(np.float64), float(dets.score[d])))
            votes[track_id] = votes.get(track_id, 0.0) + frame_votes[d]
    tracks = []
    for track_id, items in rows.items():
        score = np.array([s for _, _, s in items])
        tracks.append(Track(track_id, int(np.argmax(votes[track_id])), np.array([f for f, _, _ in items], np.int64),
                            np.stack([b for _, b, _ in items]), score, np.full(len(items), TEACHER, np.int8),
                            float(score.mean())))
    return sorted(tracks, key=lambda tr: (int(tr.frame[0]), tr.id))


def _merge_duplicates(dets: Detections, iou: float) -> tuple[Detections, np.ndarray]:
    """Class-agnostic NMS: (kept detections, [kept, classes] summed scores of each and its duplicates)."""
    order = np.argsort(-dets.score, kind="stable")
    overlap = box_iou(dets.box[order].astype(np.float64), dets.box[order].astype(np.float64))
    owner = np.arange(len(order))
    for i in range(len(order)):
        earlier = np.flatnonzero(overlap[i, :i] >= iou)
        kept_earlier = earlier[owner[earlier] == earlier]
        if kept_earlier.size:
            owner[i] = kept_earlier[0]
    kept = np.flatnonzero(owner == np.arange(len(order)))
    votes = np.zeros((len(order), len(CLASSES)))
    np.add.at(votes, (owner, dets.cls[order]), dets.score[order])
    return dets.select(order[kept]), votes[kept]


def repair(track: Track, t_ns: np.ndarray, config: CleaningConfig, image_size: tuple[int, int]) -> Track:
    """Fill gaps of up to max_gap frames (linear in time), smooth the boxes, clip them to the image."""
    frames = track.frame
    filled = np.arange(frames[0], frames[-1] + 1, dtype=np.int64)
    gaps = np.diff(frames) - 1
    if (gaps > config.max_gap).any():
        raise ValueError(f"track {track.id}: gap of {int(gaps.max())} frames, more than max_gap {config.max_gap}")
    t_all, t_known = t_ns[filled].astype(np.float64), t_ns[frames].astype(np.float64)
    box = np.stack([np.interp(t_all, t_known, track.box[:, k]) for k in range(4)], 1)
    score = np.interp(t_all, t_known, track.score)
    origin = np.full(len(filled), INTERPOLATED, np.int8)
    origin[frames - frames[0]] = TEACHER
    window = min(config.smooth_frames, len(filled) - (1 - len(filled) % 2))
    if window > config.smooth_order and window > 1:
        box = savgol_filter(box, window, config.smooth_order, axis=0, mode="interp")
    w, h = image_size
    box[:, [0, 2]] = np.clip(box[:, [0, 2]], -0.5, w - 0.5)
    box[:, [1, 3]] = np.clip(box[:, [1, 3]], -0.5, h - 0.5)
    return Track(track.id, track.cls, filled, box, score, origin, track.track_score)


def clean(t_ns: Sequence[int], detections: Sequence[Detections], config: CleaningConfig,
          image_size: tuple[int, int]) -> list[Track]:
    """Cleaned tracks of one camera: associated, short / weak tracks dropped, repaired."""
    times = np.asarray(t_ns, np.int64)
    tracks = associate(t_ns, detections, config)
    kept = [tr for tr in tracks if len(tr) >= config.min_frames and tr.track_score >= config.min_track_score]
    out = []
    for tr in kept:
        tr = repair(tr, times, config, image_size)
        tr = tr.select((tr.box[:, 2] > tr.box[:, 0]) & (tr.box[:, 3] > tr.box[:, 1]))  # smoothed off the image
        if len(tr):
            out.append(tr)
    return out
