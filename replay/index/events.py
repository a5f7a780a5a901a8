"""Derived events (tables.EVENT_KINDS), from the index's columns: pure functions, exact on synthetic drives.

Thresholds are module constants (documented in docs/fleet.md). An event is an interval [start_ns, end_ns];
onsets have start = end (the frame set where the change shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from perception.eval.detection import box_iou
from perception.labels import GroundTruth
from perception.io.run_file import Run
from replay.metrics.align import align
from replay.metrics.matching import match_boxes

from replay.index.extract import BRAKE_LEVEL, Columns

LANE_HALF_WIDTH_M = 1.75     # the ego lane around y = 0 (lead vehicle; `ahead` in queries uses AHEAD_HALF_WIDTH_M)
LEAD_BRAKE_DECEL = 1.5       # m/s^2 of the lead's own (absolute) speed
CROSSING_SPEED = 0.3         # m/s across the ego path
CROSSING_CORRIDOR_M = 16.0   # |y| within which a lateral mover counts as crossing the road ahead
CROSSING_RANGE_M = 80.0      # ahead, 0 < x <= this
MISS_RANGE_M = 40.0
MISS_MIN_HEIGHT_PX = 16.0
MISS_IOU = 0.3
VRU = ("pedestrian", "cyclist")
VEHICLES = ("car", "truck")


@dataclass(frozen=True)
class Event:
    start_ns: int
    end_ns: int
    kind: str
    source: str
    track_id: int | None = None
    camera: str | None = None
    detail: str = ""


def hint_events(hints: Columns) -> list[Event]:
    """brake / prepare onsets from the staged brake hint."""
    events = []
    level = hints["brake_level"].astype(np.int64)
    previous = np.concatenate([[0], level[:-1]])
    for i in np.flatnonzero(level != previous):
        t = int(hints["t_ns"][i])
        if level[i] == BRAKE_LEVEL["brake"]:
            events.append(Event(t, t, "brake_onset", "output", detail=f"brake from {hints['brake'][i - 1] if i else 'none'}"))
        elif level[i] == BRAKE_LEVEL["prepare"] and previous[i] == 0:
            events.append(Event(t, t, "prepare_onset", "output", detail="prepare from none"))
    return events


def cut_in_events(run: Run) -> list[Event]:
    """One event per cut-in track id, over the frame sets that list it."""
    spans: dict[int, list[int]] = {}
    for recorded in run.hints:
        for track in recorded.message.cut_in_ids:
            spans.setdefault(int(track), []).append(recorded.t_ns)
    return [Event(min(ts), max(ts), "cut_in", "output", track, detail=f"track {track} cuts in")
            for track, ts in sorted(spans.items())]


def _intervals(times: np.ndarray, mask: np.ndarray, max_gap_ns: int) -> list[tuple[int, int]]:
    """Runs of True in `mask` over sorted `times`, split where consecutive hits are more than max_gap apart."""
    hit = times[mask]
    if not len(hit):
        return []
    cuts = np.flatnonzero(np.diff(hit) > max_gap_ns) + 1
    return [(int(p[0]), int(p[-1])) for p in np.split(hit, cuts)]


def crossing_events(rows: Columns, source: str, id_field: str, max_gap_ns: int) -> list[Event]:
    """Pedestrians / cyclists moving across the path ahead: 0 < x <= CROSSING_RANGE_M, |y| <= corridor,
    |vy| >= CROSSING_SPEED (velocity relative to the ego; its lateral part is the object's own)."""
    events = []
    cls = rows["cls"]
    for track in np.unique(rows[id_field][np.isin(cls, VRU)]) if len(cls) else []:
        sel = (rows[id_field] == track) & np.isin(cls, VRU)
        t, x, y, vy = (rows[k][sel] for k in ("t_ns", "x", "y", "vy"))
        order = np.argsort(t, kind="stable")
        t, x, y, vy = t[order], x[order], y[order], vy[order]
        crossing = (x > 0) & (x <= CROSSING_RANGE_M) & (np.abs(y) <= CROSSING_CORRIDOR_M) & (np.abs(vy) >= CROSSING_SPEED)
        name = rows["cls"][sel][0]
        for start, end in _intervals(t, crossing, max_gap_ns):
            events.append(Event(start, end, "crossing", source, int(track),
                                detail=f"{name} {int(track)} crosses ahead"))
    return events


def lead_brake_events(truth: Columns, max_gap_ns: int) -> list[Event]:
    """The labelled lead (nearest car / truck ahead in the ego lane) decelerating: its own speed is
    relative vx + ego speed, differentiated between consecutive labels."""
    t_all = np.unique(truth["t_ns"])
    is_lead_candidate = (np.isin(truth["cls"], VEHICLES) & (truth["x"] > 0)
                         & (np.abs(truth["y"]) <= LANE_HALF_WIDTH_M))
    lead_t, lead_id, lead_speed = [], [], []
    for t in t_all:
        sel = np.flatnonzero(is_lead_candidate & (truth["t_ns"] == t))
        if not len(sel):
            continue
        i = sel[np.argmin(truth["x"][sel])]
        lead_t.append(t)
        lead_id.append(truth["id"][i])
        lead_speed.append(truth["vx"][i] + truth["ego_speed"][i])
    events = []
    lead_t, lead_id, lead_speed = np.asarray(lead_t), np.asarray(lead_id), np.asarray(lead_speed)
    for track in np.unique(lead_id):
        sel = lead_id == track
        t, v = lead_t[sel], lead_speed[sel]
        if len(t) < 2:
            continue
        accel = np.diff(v) / (np.diff(t) * 1e-9)
        braking = np.concatenate([[False], accel <= -LEAD_BRAKE_DECEL])
        for start, end in _intervals(t, braking, max_gap_ns):
            events.append(Event(start, end, "lead_brake", "truth", int(track),
                                detail=f"lead {int(track)} brakes"))
    return events


def camera_events(frames: Columns, health: Columns, max_gap_ns: int) -> list[Event]:
    events = []
    stale = frames["stale"]
    cameras = sorted({c for s in stale for c in s.split(",") if c})
    for camera in cameras:
        mask = np.array([camera in s.split(",") for s in stale], bool)
        for start, end in _intervals(frames["t_ns"], mask, max_gap_ns):
            events.append(Event(start, end, "camera_stale", "output", camera=camera, detail=f"camera {camera} stale"))
    for camera in np.unique(health["camera"]) if len(health["camera"]) else []:
        sel = health["camera"] == camera
        t, state = health["t_ns"][sel], health["camera_state"][sel]
        for start, end in _intervals(t, state == "lost", max_gap_ns * 4):
            events.append(Event(start, end, "camera_lost", "output", camera=str(camera),
                                detail=f"camera {camera} lost"))
    return events


def miss_events(run: Run, labels: Sequence[GroundTruth], max_gap_ns: int) -> list[Event]:
    """Labelled objects within MISS_RANGE_M, box taller than MISS_MIN_HEIGHT_PX, less than half occluded or
    truncated, that no detection of their camera matches (IoU >= MISS_IOU, any class); another camera's view of
    an object the node fused and published there (replay/metrics/align.py) is no miss."""
    spans: dict[tuple[str, int], list[int]] = {}
    for image in align(run.detections, labels, list(run.rig)):
        if image.frame_ns is None or not image.gt.boxes:
            continue
        distance = {o.id: float(np.hypot(o.position[0], o.position[1])) for o in image.gt.objects}
        gt_boxes = image.gt_boxes
        rows, _ = match_boxes(box_iou(gt_boxes, image.det.box), MISS_IOU)
        matched = set(rows.tolist())
        scored = image.scored_view
        for k, b in enumerate(image.gt.boxes):
            clear = (scored[k] and b.occlusion < 0.5 and b.truncation < 0.5
                     and b.box[3] - b.box[1] >= MISS_MIN_HEIGHT_PX and distance.get(b.id, np.inf) <= MISS_RANGE_M)
            if clear and k not in matched:
                spans.setdefault((image.camera, b.id), []).append(image.frame_ns)
    events = []
    cls_of = {b.id: b.cls for gt in labels for b in gt.boxes}
    for (camera, obj), times in sorted(spans.items()):
        for start, end in _intervals(np.asarray(sorted(times)), np.ones(len(times), bool), max_gap_ns):
            events.append(Event(start, end, "miss", "truth", obj, camera,
                                f"{cls_of.get(obj, 'object')} {obj} missed in {camera}"))
    return events


def event_rows(drive: str, events: Sequence[Event]) -> Columns:
    return {"drive": np.full(len(events), drive, object),
            "start_ns": np.asarray([e.start_ns for e in events], np.int64),
            "end_ns": np.asarray([e.end_ns for e in events], np.int64),
            "kind": np.asarray([e.kind for e in events], object),
            "source": np.asarray([e.source for e in events], object),
            "track_id": np.asarray([np.nan if e.track_id is None else e.track_id for e in events], np.float64),
            "camera": np.asarray([e.camera for e in events], object),
            "detail": np.asarray([e.detail for e in events], object)}
