"""Rows of the index from one run (and its drive's ground truth): pure functions, numpy columns per table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perception.labels import GroundTruth
from perception.io.run_file import Run

Columns = dict[str, np.ndarray]
BRAKE_LEVEL = {"none": 0, "prepare": 1, "brake": 2}


def _nan_to_none(values: Sequence[float]) -> np.ndarray:
    """float column; NaN stays NaN (DuckDB stores it as NULL on insert)."""
    return np.asarray(values, np.float64)


def frame_rows(drive: str, run: Run) -> Columns:
    t, count, stale = [], [], []
    for recorded in run.detections:
        m = recorded.message
        t.append(recorded.t_ns)
        count.append(len(m.objects))
        stale.append(",".join(c for c, s in zip(m.diag.cameras, m.stale) if s))
    return {"drive": np.full(len(t), drive, object), "t_ns": np.asarray(t, np.int64),
            "objects": np.asarray(count, np.int32), "stale": np.asarray(stale, object)}


def object_rows(drive: str, run: Run) -> Columns:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (
        "t_ns", "track_id", "camera", "cls", "score", "box", "range_m", "position", "velocity", "ttc_s", "age_s",
        "coasting")}
    for recorded in run.detections:
        m, o = recorded.message, recorded.message.objects
        n = len(o)
        if not n:
            continue
        parts["t_ns"].append(np.full(n, recorded.t_ns, np.int64))
        parts["camera"].append(np.asarray(m.diag.cameras, object)[o.camera])
        parts["cls"].append(np.asarray(m.classes, object)[o.cls])
        for name in ("track_id", "score", "box", "range_m", "position", "velocity", "ttc_s", "age_s", "coasting"):
            parts[name].append(getattr(o, name))
    if not parts["t_ns"]:
        empty = {k: np.zeros(0) for k in ("score", "x0", "y0", "x1", "y1", "range_m", "x", "y", "z", "vx", "vy",
                                          "ttc_s", "age_s")}
        return {"drive": np.zeros(0, object), "t_ns": np.zeros(0, np.int64), "track_id": np.zeros(0, np.int64),
                "camera": np.zeros(0, object), "cls": np.zeros(0, object), **empty, "coasting": np.zeros(0, bool)}
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    box, pos, vel = cat["box"].astype(np.float64), cat["position"].astype(np.float64), cat["velocity"].astype(np.float64)
    return {"drive": np.full(len(cat["t_ns"]), drive, object), "t_ns": cat["t_ns"], "track_id": cat["track_id"],
            "camera": cat["camera"], "cls": cat["cls"], "score": cat["score"].astype(np.float64),
            "x0": box[:, 0], "y0": box[:, 1], "x1": box[:, 2], "y1": box[:, 3],
            "range_m": cat["range_m"].astype(np.float64), "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2],
            "vx": vel[:, 0], "vy": vel[:, 1], "ttc_s": cat["ttc_s"].astype(np.float64),
            "age_s": cat["age_s"].astype(np.float64), "coasting": cat["coasting"]}


def hint_rows(drive: str, run: Run) -> Columns:
    rows = [r.message for r in run.hints]
    lead = [m.lead for m in rows]
    nan = float("nan")
    return {"drive": np.full(len(rows), drive, object), "t_ns": np.asarray([r.t_ns for r in run.hints], np.int64),
            "brake": np.asarray([m.brake for m in rows], object),
            "brake_level": np.asarray([BRAKE_LEVEL[m.brake] for m in rows], np.int8),
            # no lead: NaN, stored as NULL
            "lead_id": _nan_to_none([nan if x is None else x.track_id for x in lead]),
            "lead_range_m": _nan_to_none([nan if x is None else x.gap_m for x in lead]),
            "lead_rel_speed_mps": _nan_to_none([nan if x is None else x.rel_speed_mps for x in lead]),
            "lead_ttc_s": _nan_to_none([nan if x is None else x.ttc_s for x in lead]),
            "speed_cap_mps": _nan_to_none([m.speed_cap_mps for m in rows]),
            "free_distance_m": _nan_to_none([m.free_distance_m for m in rows]),
            "cut_ins": np.asarray([len(m.cut_in_ids) for m in rows], np.int32),
            "confidence": _nan_to_none([m.confidence for m in rows])}


def health_rows(drive: str, run: Run) -> Columns:
    t, state, reasons, camera, camera_state = [], [], [], [], []
    for recorded in run.health:
        m = recorded.message
        for name, cam_state in zip(m.diag.cameras, m.camera_states):
            t.append(recorded.t_ns)
            state.append(m.state)
            reasons.append("; ".join(m.reasons))
            camera.append(name)
            camera_state.append(cam_state)
    return {"drive": np.full(len(t), drive, object), "t_ns": np.asarray(t, np.int64),
            "state": np.asarray(state, object), "reasons": np.asarray(reasons, object),
            "camera": np.asarray(camera, object), "camera_state": np.asarray(camera_state, object)}


def truth_rows(drive: str, labels: Sequence[GroundTruth]) -> Columns:
    """The objects of one camera's labels (all actors within range, visible or not)."""
    t, ids, cls, x, y, vx, vy, ego = [], [], [], [], [], [], [], []
    for gt in labels:
        for obj in gt.objects:
            t.append(gt.t_ns)
            ids.append(obj.id)
            cls.append(obj.cls)
            x.append(obj.position[0])
            y.append(obj.position[1])
            vx.append(obj.velocity[0])
            vy.append(obj.velocity[1])
            ego.append(gt.ego_speed)
    x_, y_ = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return {"drive": np.full(len(t), drive, object), "t_ns": np.asarray(t, np.int64), "id": np.asarray(ids, np.int64),
            "cls": np.asarray(cls, object), "x": x_, "y": y_, "vx": np.asarray(vx, np.float64),
            "vy": np.asarray(vy, np.float64), "range_m": np.hypot(x_, y_), "ego_speed": np.asarray(ego, np.float64)}


def embedding_rows(drive: str, times: Sequence[int], vectors: np.ndarray) -> Columns:
    """Long format (one row per component) for the insert; the store packs each frame's vector into a list."""
    vectors = np.asarray(vectors, np.float32).reshape(len(times), -1)
    n, d = vectors.shape
    return {"drive": np.full(n * d, drive, object), "t_ns": np.repeat(np.asarray(times, np.int64), d),
            "k": np.tile(np.arange(d, dtype=np.int32), n), "v": vectors.reshape(-1).astype(np.float64)}
