"""The index's tables: names, columns and types (one table drives the DDL, the inserts and docs/fleet.md).

Every table has `drive` (the drive's id: its file stem) and a time in drive nanoseconds. NaN (unknown)
values are stored as NULL; infinities (e.g. TTC of an object that is not closing) stay infinite.
"""

from __future__ import annotations

TABLES: dict[str, dict[str, str]] = {
    "drives": {"drive": "VARCHAR", "drive_path": "VARCHAR", "run_path": "VARCHAR", "cameras": "VARCHAR",
               "start_ns": "BIGINT", "end_ns": "BIGINT", "frame_sets": "BIGINT", "model_id": "VARCHAR",
               "has_truth": "BOOLEAN", "has_embeddings": "BOOLEAN"},
    # one row per frame set; `stale` is the comma-separated list of stale cameras ('' none)
    "frames": {"drive": "VARCHAR", "t_ns": "BIGINT", "objects": "INTEGER", "stale": "VARCHAR"},
    "objects": {"drive": "VARCHAR", "t_ns": "BIGINT", "track_id": "BIGINT", "camera": "VARCHAR", "cls": "VARCHAR",
                "score": "FLOAT", "x0": "FLOAT", "y0": "FLOAT", "x1": "FLOAT", "y1": "FLOAT", "range_m": "FLOAT",
                "x": "FLOAT", "y": "FLOAT", "z": "FLOAT", "vx": "FLOAT", "vy": "FLOAT", "ttc_s": "FLOAT",
                "age_s": "FLOAT", "coasting": "BOOLEAN"},
    # brake_level: 0 none, 1 prepare, 2 brake
    "hints": {"drive": "VARCHAR", "t_ns": "BIGINT", "brake": "VARCHAR", "brake_level": "TINYINT",
              "lead_id": "BIGINT", "lead_range_m": "FLOAT", "lead_rel_speed_mps": "FLOAT", "lead_ttc_s": "FLOAT",
              "speed_cap_mps": "FLOAT", "free_distance_m": "FLOAT", "cut_ins": "INTEGER", "confidence": "FLOAT"},
    # one row per health message and camera
    "health": {"drive": "VARCHAR", "t_ns": "BIGINT", "state": "VARCHAR", "reasons": "VARCHAR", "camera": "VARCHAR",
               "camera_state": "VARCHAR"},
    # ground truth objects of the anchor (first) camera's labels, vehicle frame, velocity relative to the ego
    "truth": {"drive": "VARCHAR", "t_ns": "BIGINT", "id": "BIGINT", "cls": "VARCHAR", "x": "FLOAT", "y": "FLOAT",
              "vx": "FLOAT", "vy": "FLOAT", "range_m": "FLOAT", "ego_speed": "FLOAT"},
    # derived events (replay/index/events.py): kind, source ('output' | 'truth'), an interval (onsets: start = end)
    "events": {"drive": "VARCHAR", "start_ns": "BIGINT", "end_ns": "BIGINT", "kind": "VARCHAR", "source": "VARCHAR",
               "track_id": "BIGINT", "camera": "VARCHAR", "detail": "VARCHAR"},
    # per frame set: pooled engine state (replay/index/embedding.py), unit length
    "embeddings": {"drive": "VARCHAR", "t_ns": "BIGINT", "vec": "FLOAT[]"},
}

EVENT_KINDS: dict[str, str] = {
    "brake_onset": "the brake hint went to `brake`",
    "prepare_onset": "the brake hint went from `none` to `prepare`",
    "cut_in": "a track id appeared in the hints' cut-in ids (output) ",
    "crossing": "a pedestrian or cyclist moving across the ego path ahead (output: tracks; truth: labels)",
    "lead_brake": "the labelled lead vehicle (ego lane, ahead) starts decelerating harder than 1.5 m/s^2 (truth)",
    "camera_stale": "a camera had no fresh frame in a frame set",
    "camera_lost": "health reports a camera lost",
    "miss": "a clearly visible labelled object (<= 40 m) with no detection of IoU >= 0.3 in its camera",
}


def ddl(table: str) -> str:
    columns = ", ".join(f"{name} {kind}" for name, kind in TABLES[table].items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"
