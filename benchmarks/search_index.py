"""Scenario search speed: queries over 100 indexed drive-minutes (rows synthesised, no video rendered).

    python benchmarks/search_index.py [--minutes 100] [--objects 12]

Builds an index of `minutes` one-minute drives at 10 frame sets / s with `objects` tracked objects per
frame set (random classes, positions, velocities, TTC), hints, health, events and 64-float embeddings,
through the same store as `perception index`, then times each query (best of 3) and prints a table with
the ratio to the 1 s target. Figures depend on the machine's load (report it with them).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from replay.index.events import Event, event_rows
from replay.index.search import like, search
from replay.index.store import connect, replace_drive

QUERIES = ("pedestrian ahead range<20 and brake>=prepare", "cut_in", "ttc<2 for>=0.5s", "camera stale",
           "truth crossing", "vehicle ahead range<30", "lead_brake")
FPS, EMBED = 10, 64
CLASSES = np.array(["car", "truck", "pedestrian", "cyclist"], object)


def synth_rows(drive: str, rng: np.random.Generator, frames: int, objects: int) -> dict:
    t = 1_700_000_000_000_000_000 + np.arange(frames, dtype=np.int64) * (1_000_000_000 // FPS)
    n = frames * objects
    d = lambda k: np.full(k, drive, object)  # noqa: E731
    x, y = rng.uniform(-20, 120, n), rng.uniform(-15, 15, n)
    vx, vy = rng.normal(-3, 5, n), rng.normal(0, 1, n)
    brake = rng.choice(3, frames, p=[0.9, 0.06, 0.04]).astype(np.int8)
    stale = np.where(rng.random(frames) < 0.01, "front", "").astype(object)
    cams = np.array(["front", "left", "right"], object)
    events = [Event(int(t[i]), int(t[min(i + 15, frames - 1)]), kind, "output" if kind == "cut_in" else "truth", 1)
              for kind in ("cut_in", "crossing", "lead_brake", "camera_stale") for i in rng.integers(0, frames, 3)]
    vec = rng.normal(size=(frames, EMBED)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return {
        "drives": {"drive": d(1), "drive_path": d(1), "run_path": d(1), "cameras": np.array(["front,left,right"], object),
                   "start_ns": t[:1], "end_ns": t[-1:], "frame_sets": np.array([frames]),
                   "model_id": np.array(["bench"], object), "has_truth": np.array([True]),
                   "has_embeddings": np.array([True])},
        "frames": {"drive": d(frames), "t_ns": t, "objects": np.full(frames, objects, np.int32), "stale": stale},
        "objects": {"drive": d(n), "t_ns": np.repeat(t, objects), "track_id": rng.integers(1, 400, n),
                    "camera": cams[rng.integers(0, 3, n)], "cls": CLASSES[rng.integers(0, 4, n)],
                    "score": rng.random(n), "x0": rng.random(n), "y0": rng.random(n), "x1": rng.random(n),
                    "y1": rng.random(n), "range_m": np.hypot(x, y), "x": x, "y": y, "z": np.zeros(n), "vx": vx,
                    "vy": vy, "ttc_s": np.where(vx < 0, np.hypot(x, y) / np.maximum(-vx, 1e-3), np.inf),
                    "age_s": rng.random(n), "coasting": rng.random(n) < 0.1},
        "hints": {"drive": d(frames), "t_ns": t, "brake": np.array(["none", "prepare", "brake"], object)[brake],
                  "brake_level": brake, "lead_id": rng.integers(1, 400, frames).astype(float),
                  "lead_range_m": rng.uniform(5, 80, frames), "lead_rel_speed_mps": rng.normal(0, 3, frames),
                  "lead_ttc_s": rng.uniform(0.5, 30, frames), "speed_cap_mps": rng.uniform(0, 30, frames),
                  "free_distance_m": rng.uniform(0, 100, frames), "cut_ins": rng.integers(0, 2, frames).astype(np.int32),
                  "confidence": rng.random(frames)},
        "truth": {"drive": d(n), "t_ns": np.repeat(t, objects), "id": rng.integers(1, 400, n),
                  "cls": CLASSES[rng.integers(0, 4, n)], "x": x, "y": y, "vx": vx, "vy": vy,
                  "range_m": np.hypot(x, y), "ego_speed": np.full(n, 10.0)},
        "events": event_rows(drive, events),
        "embeddings": {"drive": d(frames * EMBED), "t_ns": np.repeat(t, EMBED),
                       "k": np.tile(np.arange(EMBED, dtype=np.int32), frames), "v": vec.reshape(-1).astype(float)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=100)
    parser.add_argument("--objects", type=int, default=12)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        started = time.perf_counter()
        con = connect(db)
        for i in range(args.minutes):
            replace_drive(con, f"drive{i:03d}", synth_rows(f"drive{i:03d}", rng, 60 * FPS, args.objects))
        con.close()
        build = time.perf_counter() - started
        print(f"index: {args.minutes} drive-minutes, {args.minutes * 60 * FPS} frame sets, "
              f"{args.minutes * 60 * FPS * args.objects} objects, built in {build:.1f} s")
        rows = []
        for label, fn in [(q, lambda q=q: search(db, q)) for q in QUERIES] + [
                ("--like drive007@30", lambda: like(db, "drive007@30", k=10))]:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                hits = fn()
                times.append(time.perf_counter() - t0)
            rows.append((label, len(hits), min(times)))
        width = max(len(r[0]) for r in rows)
        print(f"{'query'.ljust(width)}  {'windows':>7}  {'s':>6}  {'/ 1 s target':>12}")
        for label, n, s in rows:
            print(f"{label.ljust(width)}  {n:7d}  {s:6.3f}  {s / 1.0:11.2f}x")


if __name__ == "__main__":
    main()
