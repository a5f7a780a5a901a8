"""Auto-labelling one recording: teacher on every selected frame, cleaning, corrections, a labelled drive.

    result = label_recording(["clip.mp4"], "teacher.onnx", "clip.labelled.mcap", LabelOptions())

Pass 1 runs the teacher over the selected frames of each camera (capture-time order) and keeps only the
detections; cleaning and corrections work on those; pass 2 reads the recording again and writes each
selected frame as a JPEG (foxglove.CompressedImage) with its labels at the same capture time, so the
output is an ordinary drive (docs/drive_format.md) that `perception train` reads. Every selected frame
gets a ground-truth message, empty when nothing is labelled on it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calib.rig import Rig
from perception.autolabel.clean import CleaningConfig, Track, clean
from perception.autolabel.teacher import Teacher, open_teacher
from perception.detections import Detections
from perception.errors import ConfigError
from perception.io.drive import DriveWriter, open_drive
from perception.io.drive_common import CameraFrame, Drive
from perception.labels import AUTO_ORIGINS, CLASSES, AutoLabel, GroundTruth, GroundTruthBox

if TYPE_CHECKING:
    from perception.autolabel.corrections import Corrections


@dataclass(frozen=True)
class LabelOptions:
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    start_s: float | None = None      # from the recording's first frame
    end_s: float | None = None
    every: int = 1                    # every k-th frame of each camera within the time range
    cameras: tuple[str, ...] | None = None
    jpeg_quality: int = 90
    threads: int | None = None        # teacher (ONNX Runtime) threads
    teacher_card: Path | None = None  # model card of a plug-in teacher, when not beside it or inside it

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"autolabel: every must be >= 1, got {self.every}")
        for name, value in (("start", self.start_s), ("end", self.end_s)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"autolabel: {name} must be a time >= 0 s, got {value}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ConfigError(f"autolabel: end ({self.end_s} s) must be after start ({self.start_s} s)")


@dataclass
class CameraLabels:
    """One camera's selected frames: the teacher's raw detections and the cleaned (corrected) tracks."""

    camera: str
    image_size: tuple[int, int]
    t_ns: np.ndarray                  # [F] int64 capture times of the selected frames
    detections: list[Detections]      # [F] raw teacher output
    tracks: list[Track]

    def frame_labels(self, teacher_id: str) -> list[GroundTruth]:
        """One GroundTruth per selected frame (auto labels only; no 3D objects, ego speed unknown)."""
        boxes: list[list[GroundTruthBox]] = [[] for _ in range(len(self.t_ns))]
        for tr in self.tracks:
            for f, box, score, origin in zip(tr.frame.tolist(), tr.box, tr.score.tolist(), tr.origin.tolist()):
                auto = AutoLabel(teacher_id, round(float(np.clip(score, 0, 1)), 4),
                                 round(float(np.clip(tr.track_score, 0, 1)), 4), AUTO_ORIGINS[origin])
                boxes[f].append(GroundTruthBox(tr.id, CLASSES[tr.cls], tuple(round(float(v), 2) for v in box),
                                               0.0, 0.0, auto))
        return [GroundTruth(self.camera, int(t), tuple(b), (), None) for t, b in zip(self.t_ns.tolist(), boxes)]


@dataclass
class LabelResult:
    teacher_id: str
    cameras: list[CameraLabels]
    out: Path | None = None

    def lines(self) -> list[str]:
        out = []
        for c in self.cameras:
            labels = sum(len(tr) for tr in c.tracks)
            raw = sum(len(d) for d in c.detections)
            out.append(f"{c.camera}: {len(c.t_ns)} frames, {raw} teacher detections -> {len(c.tracks)} tracks, "
                       f"{labels} labels")
        return out


def selected_frames(drive: Drive, cameras: Sequence[str], options: LabelOptions) -> Iterator[CameraFrame]:
    """The frames to label: within [start, end) of the recording's first frame, every k-th per camera."""
    # asked only with a time range: a video's start_ns grabs every frame of the file once
    t0 = 0 if options.start_s is None and options.end_s is None else (drive.start_ns or 0)
    start = None if options.start_s is None else t0 + round(options.start_s * 1e9)
    end = None if options.end_s is None else t0 + round(options.end_s * 1e9)
    counts = dict.fromkeys(cameras, 0)
    for cf in drive.frames(cameras, start_ns=start, end_ns=end):
        k = counts[cf.camera]
        counts[cf.camera] = k + 1
        if k % options.every == 0:
            yield cf


def run_teacher(drive: Drive, cameras: Sequence[str], teacher: Teacher, options: LabelOptions,
                progress: Callable[[Iterator[CameraFrame]], Iterator[CameraFrame]] | None = None
                ) -> dict[str, tuple[np.ndarray, list[Detections]]]:
    """Raw teacher detections of every selected frame, per camera."""
    index = {name: n for n, name in enumerate(cameras)}
    times: dict[str, list[int]] = {c: [] for c in cameras}
    dets: dict[str, list[Detections]] = {c: [] for c in cameras}
    frames = selected_frames(drive, cameras, options)
    for cf in progress(frames) if progress else frames:
        times[cf.camera].append(cf.t_ns)
        dets[cf.camera].append(teacher.detect(index[cf.camera], cf.t_ns, cf.frame))
    return {c: (np.asarray(times[c], np.int64), dets[c]) for c in cameras}


def label_drive(drive: Drive, teacher: Teacher, options: LabelOptions, corrections: "Corrections | None" = None,
                progress=None) -> LabelResult:
    """Teacher, cleaning and corrections over an open recording (nothing written)."""
    cameras = options.cameras or drive.cameras
    raw = run_teacher(drive, cameras, teacher, options, progress)
    labels = []
    for camera in cameras:
        t_ns, dets = raw[camera]
        model = drive.rig[camera]
        size = (model.width, model.height)
        tracks = clean(t_ns, dets, options.cleaning, size)
        labels.append(CameraLabels(camera, size, t_ns, dets, tracks))
    if corrections is not None:
        from perception.autolabel.corrections import apply_corrections

        apply_corrections(labels, corrections, teacher.teacher_id)
    return LabelResult(teacher.teacher_id, labels)


def write_labelled(drive: Drive, result: LabelResult, out: str | Path, options: LabelOptions) -> Path:
    """The labelled drive: selected frames as JPEG, one ground-truth message per frame (same time)."""
    names = {c.camera: topic_name(c.camera) for c in result.cameras}
    rig = Rig([dataclasses.replace(drive.rig[c], name=names[c]) for c in names])
    labels = {c.camera: iter(c.frame_labels(result.teacher_id)) for c in result.cameras}
    out = Path(out)
    with DriveWriter(out, rig, jpeg_quality=options.jpeg_quality) as writer:
        for cf in selected_frames(drive, list(names), options):
            gt = next(labels[cf.camera], None)
            if gt is None or gt.t_ns != cf.t_ns:
                raise ConfigError(f"{out}: camera {cf.camera}: the recording changed between passes "
                                  f"(frame at {cf.t_ns} ns without labels)")
            writer.write_frame(names[cf.camera], cf.t_ns, cf.frame)
            writer.write_ground_truth(dataclasses.replace(gt, camera=names[cf.camera]))
    return out


def topic_name(camera: str) -> str:
    """A camera name usable in topic names (video file stems may hold any character)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", camera) or "camera"


def label_recording(recording: str | Path, teacher_path: str | Path, out: str | Path, options: LabelOptions,
                    corrections: "Corrections | None" = None, progress=None) -> LabelResult:
    """`perception autolabel` for one recording (a drive, a ROS 2 bag or a video file)."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ConfigError(f"autolabel: {out}: the folder {out.parent} does not exist")
    drive = open_drive(recording)
    try:
        cameras = options.cameras or drive.cameras
        teacher = open_teacher(teacher_path, [drive.rig[c] for c in cameras], options.cleaning.detect_score,
                               threads=options.threads, card=options.teacher_card)
        result = label_drive(drive, teacher, options, corrections, progress)
        result.out = write_labelled(drive, result, out, options)
    finally:
        drive.close()
    return result
