"""Corrections of automatic labels: a YAML file of per-track edits applied after cleaning (pure core).

    teacher: demo-10828ed3bd64        # optional: refuse to apply to labels of another teacher
    corrections:
      - {track: 3, action: delete}                                   # the whole track
      - {track: 4, action: delete, start_ns: 1200000000, end_ns: 1400000000}
      - {track: 5, action: relabel, cls: truck}
      - {track: 7, action: rebox, start_ns: 0, end_ns: 400000000,
         box: [100, 200, 180, 260], box_end: [120, 205, 210, 270]}
      - {camera: front, track: 2, action: delete}                    # camera: required with several cameras

Times are capture times in ns (the review sheet prints them), inclusive, default: the track's first /
last frame. `rebox` sets the track's box on every labelled frame of the range, adding it where the teacher
lost the object; `box` holds at `start_ns`, `box_end` (default `box`) at `end_ns`, linear in time between.
Edits apply in file order; track ids are those the same recording, teacher and cleaning settings give.
The file is read with limits (docs/autolabel.md); any problem is a ConfigError naming the file, the
entry and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perception.autolabel.clean import CORRECTED, Track
from perception.errors import ConfigError
from perception.labels import CLASS_INDEX, CLASSES
from perception.yaml_io import brief, expect_float, expect_int, expect_str, load_yaml

if TYPE_CHECKING:
    from perception.autolabel.pipeline import CameraLabels

MAX_BYTES = 1 << 20
MAX_ENTRIES = 10_000
ACTIONS = ("delete", "relabel", "rebox")
_KEYS = {"delete": {"start_ns", "end_ns"}, "relabel": {"cls"}, "rebox": {"start_ns", "end_ns", "box", "box_end"}}


@dataclass(frozen=True)
class Correction:
    action: str                  # one of ACTIONS
    track: int
    camera: str | None = None    # None: the recording's only camera
    start_ns: int | None = None
    end_ns: int | None = None
    cls: str | None = None       # relabel
    box: tuple[float, float, float, float] | None = None      # rebox, at start_ns
    box_end: tuple[float, float, float, float] | None = None  # rebox, at end_ns


@dataclass(frozen=True)
class Corrections:
    entries: tuple[Correction, ...]
    teacher: str | None = None
    where: str = "corrections"


def load_corrections(path: str | Path) -> Corrections:
    return parse_corrections(load_yaml(path, MAX_BYTES, ConfigError), str(path))


def parse_corrections(doc: Any, where: str) -> Corrections:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a mapping with a 'corrections' list, got {brief(doc)}")
    unknown = sorted(set(doc) - {"teacher", "corrections"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {brief(unknown[0])} (known: teacher, corrections)")
    teacher = None if doc.get("teacher") is None else expect_str(doc["teacher"], "teacher", ConfigError, where)
    items = doc.get("corrections") or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: 'corrections' must be a list, got {brief(items)}")
    if len(items) > MAX_ENTRIES:
        raise ConfigError(f"{where}: {len(items)} corrections, more than the limit of {MAX_ENTRIES}")
    return Corrections(tuple(_entry(item, f"{where}: corrections[{i}]") for i, item in enumerate(items)), teacher,
                       where)


def _entry(item: Any, where: str) -> Correction:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be a mapping, got {brief(item)}")
    action = expect_str(item.get("action"), "action", ConfigError, where)
    if action not in ACTIONS:
        raise ConfigError(f"{where}: field 'action': {brief(action)} is not one of {', '.join(ACTIONS)}")
    allowed = {"action", "track", "camera"} | _KEYS[action]
    unknown = sorted(set(item) - allowed, key=str)
    if unknown:
        raise ConfigError(f"{where}: field {brief(unknown[0])} does not apply to {action} "
                          f"(fields: {', '.join(sorted(allowed))})")
    if "track" not in item:
        raise ConfigError(f"{where}: field 'track' is missing")
    track = expect_int(item["track"], "track", ConfigError, where, minimum=0)
    camera = None if item.get("camera") is None else expect_str(item["camera"], "camera", ConfigError, where)
    start = None if item.get("start_ns") is None else expect_int(item["start_ns"], "start_ns", ConfigError, where, 0)
    end = None if item.get("end_ns") is None else expect_int(item["end_ns"], "end_ns", ConfigError, where, 0)
    if start is not None and end is not None and end < start:
        raise ConfigError(f"{where}: end_ns ({end}) is before start_ns ({start})")
    cls = box = box_end = None
    if action == "relabel":
        cls = expect_str(item.get("cls"), "cls", ConfigError, where)
        if cls not in CLASS_INDEX:
            raise ConfigError(f"{where}: field 'cls': {brief(cls)} is not one of {', '.join(CLASSES)}")
    if action == "rebox":
        if "box" not in item:
            raise ConfigError(f"{where}: field 'box' is missing (rebox needs [x0, y0, x1, y1])")
        box = _box(item["box"], "box", where)
        box_end = _box(item["box_end"], "box_end", where) if item.get("box_end") is not None else None
    return Correction(action, track, camera, start, end, cls, box, box_end)


def _box(value: Any, field: str, where: str) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4:
        raise ConfigError(f"{where}: field {field!r}: expected [x0, y0, x1, y1], got {brief(value)}")
    box = tuple(expect_float(v, field, ConfigError, where) for v in value)
    if not (box[2] > box[0] and box[3] > box[1]):
        raise ConfigError(f"{where}: field {field!r}: needs x1 > x0 and y1 > y0, got {list(box)}")
    return box  # type: ignore[return-value]


def apply_corrections(cameras: Sequence["CameraLabels"], corrections: Corrections, teacher_id: str) -> None:
    """Edit the cameras' tracks in place, entry by entry."""
    if corrections.teacher is not None and corrections.teacher != teacher_id:
        raise ConfigError(f"{corrections.where}: written for teacher {corrections.teacher!r}, these labels come "
                          f"from {teacher_id!r} (its track ids would not be the same)")
    by_name = {c.camera: c for c in cameras}
    for i, entry in enumerate(corrections.entries):
        where = f"{corrections.where}: corrections[{i}]"
        if entry.camera is None:
            if len(cameras) != 1:
                raise ConfigError(f"{where}: field 'camera' is needed, the labels have cameras {', '.join(by_name)}")
            labels = cameras[0]
        elif entry.camera not in by_name:
            raise ConfigError(f"{where}: field 'camera': no camera {entry.camera!r} (cameras: {', '.join(by_name)})")
        else:
            labels = by_name[entry.camera]
        rows = [k for k, tr in enumerate(labels.tracks) if tr.id == entry.track]
        if not rows:
            raise ConfigError(f"{where}: camera {labels.camera!r} has no track {entry.track}")
        k = rows[0]
        edited = _apply(entry, labels.tracks[k], labels.t_ns, labels.image_size, where)
        if len(edited):
            labels.tracks[k] = edited
        else:
            del labels.tracks[k]


def _apply(entry: Correction, track: Track, t_ns: np.ndarray, image_size: tuple[int, int], where: str) -> Track:
    times = t_ns[track.frame]
    start = int(times[0]) if entry.start_ns is None else entry.start_ns
    end = int(times[-1]) if entry.end_ns is None else entry.end_ns
    if entry.action == "relabel":
        return Track(track.id, CLASS_INDEX[entry.cls], track.frame, track.box, track.score,  # type: ignore[index]
                     np.full(len(track), CORRECTED, np.int8), track.track_score)
    if entry.action == "delete":
        return track.select(~((times >= start) & (times <= end)))
    frames = np.flatnonzero((t_ns >= start) & (t_ns <= end))
    if frames.size == 0:
        raise ConfigError(f"{where}: no labelled frame between {start} and {end} ns")
    a, b = np.asarray(entry.box, np.float64), np.asarray(entry.box_end or entry.box, np.float64)
    u = (t_ns[frames] - start) / (end - start) if end > start else np.zeros(frames.size)
    box = a + u[:, None] * (b - a)
    w, h = image_size
    box[:, [0, 2]] = np.clip(box[:, [0, 2]], -0.5, w - 0.5)
    box[:, [1, 3]] = np.clip(box[:, [1, 3]], -0.5, h - 0.5)
    if not ((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])).all():
        raise ConfigError(f"{where}: the box lies outside the {w}x{h} image")
    keep = ~np.isin(track.frame, frames)
    frame = np.concatenate([track.frame[keep], frames])
    order = np.argsort(frame, kind="stable")
    return Track(track.id, track.cls, frame[order], np.concatenate([track.box[keep], box])[order],
                 np.concatenate([track.score[keep], np.full(frames.size, track.track_score)])[order],
                 np.concatenate([track.origin[keep], np.full(frames.size, CORRECTED, np.int8)])[order],
                 track.track_score)
