"""Indexing runs and drives into the DuckDB index (docs/fleet.md).

    index_paths(["drive_a.mcap", "runs/b.run.mcap"], "fleet.duckdb", runs_dir="runs/")

A drive is replayed through the node (lockstep, replay.runner.replay_drive) into `<runs_dir>/<stem>.run.mcap`
with the engine wrapped by embedding.StateTap, so its frame sets also get embeddings. A run file is read as
it is (it carries no engine state: no embeddings; index its drive for query by example); its ground truth
comes from the drive it names, when that exists. Each input is one `drive` id (the file stem, a run's
`.run` suffix dropped); indexing it again replaces its rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import ConfigError, PerceptionError
from perception.io.run_file import RUN_FORMAT, RunReader, load_run

from replay.index import events as ev
from replay.index.extract import (Columns, embedding_rows, frame_rows, health_rows, hint_rows, object_rows,
                                  truth_rows)
from replay.index.store import connect, replace_drive, write_parquet


@dataclass
class DriveRows:
    """Everything the index holds about one drive (table -> columns), built where the drive is read."""
    drive: str
    rows: dict[str, Columns]
    frame_sets: int
    seconds: float
    events: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexResult:
    drive: str
    path: str
    ok: bool
    error: str | None
    frame_sets: int = 0
    seconds: float = 0.0
    events: dict[str, int] = field(default_factory=dict)


def drive_id(path: Path) -> str:
    name = path.name
    for suffix in (".run.mcap", ".mcap"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_run_file(path: Path) -> bool:
    if path.suffix != ".mcap" or not path.is_file():
        return False
    try:
        with RunReader(path) as reader:
            return reader.info.get("format") == RUN_FORMAT
    except PerceptionError:
        return False


def read_drive_rows(path: str | Path, runs_dir: str | Path, config: Any = None) -> DriveRows:
    """Replays (a drive) or reads (a run) `path` and derives its rows. Runs anywhere (a worker process or
    a Ray task): it reads files and returns arrays; only the caller writes the index."""
    path = Path(path)
    start = time.monotonic()
    if not path.exists():
        raise ConfigError(f"{path}: no such run or drive")
    vectors: list[np.ndarray] | None = None
    if is_run_file(path):
        run_path = path
        run = load_run(run_path)
        drive_path = run.drive_path if run.drive_path is not None and run.drive_path.exists() else None
        if run.has_inputs and drive_path is None:
            drive_path = run_path
        drive = drive_id(drive_path if drive_path is not None and drive_path != run_path else run_path)
    else:
        from perception.node.config import NodeConfig
        try:  # the node's assembly is being split out of process.py (another change in flight)
            from perception.node.assembly import open_engine
        except ImportError:
            from perception.node.process import open_engine
        from replay.index.embedding import StateTap
        from replay.runner import replay_drive

        drive_path, drive = path, drive_id(path)
        run_path = Path(runs_dir) / f"{drive}.run.mcap"
        run_path.parent.mkdir(parents=True, exist_ok=True)
        config = config or NodeConfig()
        tap = StateTap(open_engine(config))
        replay_drive(path, run_path, config, engine=tap)
        run = load_run(run_path)
        vectors = tap.vectors if not tap.failed_steps and len(tap.vectors) == len(run.detections) else None
    return _rows(drive, run, drive_path, run_path, vectors, time.monotonic() - start)


def _labels(drive_path: Path | None) -> list:
    if drive_path is None:
        return []
    from perception.io.drive import DriveReader, open_drive

    drive = open_drive(drive_path)
    try:
        return list(drive.ground_truth()) if isinstance(drive, DriveReader) else []
    finally:
        drive.close()


def _rows(drive: str, run: Any, drive_path: Path | None, run_path: Path, vectors: list[np.ndarray] | None,
          seconds: float) -> DriveRows:
    labels = _labels(drive_path)
    cameras = list(run.rig.names)
    anchor_labels = [gt for gt in labels if gt.camera == cameras[0]]
    frames, hints, health = frame_rows(drive, run), hint_rows(drive, run), health_rows(drive, run)
    objects, truth = object_rows(drive, run), truth_rows(drive, anchor_labels)
    t = frames["t_ns"]
    gap = int(max(5e7, 1.5 * float(np.median(np.diff(t))))) if len(t) > 1 else int(5e7)
    found = (ev.hint_events(hints) + ev.cut_in_events(run) + ev.camera_events(frames, health, gap)
             + ev.crossing_events(objects, "output", "track_id", gap))
    if anchor_labels:
        found += (ev.crossing_events(truth, "truth", "id", gap) + ev.lead_brake_events(truth, gap)
                  + ev.miss_events(run, labels, gap))
    first = run.detections[0].message if run.detections else None
    drives = {"drive": np.array([drive], object), "drive_path": np.array([str(drive_path or "")], object),
              "run_path": np.array([str(run_path)], object), "cameras": np.array([",".join(cameras)], object),
              "start_ns": np.array([int(t[0]) if len(t) else 0], np.int64),
              "end_ns": np.array([int(t[-1]) if len(t) else 0], np.int64),
              "frame_sets": np.array([len(t)], np.int64),
              "model_id": np.array([first.diag.model_id if first is not None else ""], object),
              "has_truth": np.array([bool(anchor_labels)]), "has_embeddings": np.array([vectors is not None])}
    rows = {"drives": drives, "frames": frames, "objects": objects, "hints": hints, "health": health,
            "truth": truth, "events": ev.event_rows(drive, found)}
    if vectors is not None and len(vectors):
        rows["embeddings"] = embedding_rows(drive, t, np.stack(vectors))
    counts: dict[str, int] = {}
    for e in found:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    return DriveRows(drive, rows, len(t), seconds, counts)


Reader = Callable[[Path, Path, Any], DriveRows]


def index_paths(paths: Sequence[str | Path], db: str | Path, *, runs_dir: str | Path | None = None,
                config: Any = None, parquet: str | Path | None = None, jobs: int | None = 1,
                ray_address: str | None = None, use_ray: bool = False,
                progress: Callable[[IndexResult], None] | None = None) -> list[IndexResult]:
    """Indexes every path into `db` (drives replayed into `runs_dir`, default `<db>.runs/`). A path that fails
    is reported in its result and the others go on. `use_ray` spreads the reading over a Ray cluster
    (`ray_address`, default: start a local one); `jobs` > 1 over local processes."""
    from replay.fleet.pool import map_drives

    if not paths:
        raise ConfigError("no runs or drives to index")
    db = Path(db)
    runs_dir = Path(runs_dir) if runs_dir is not None else db.with_name(db.name + ".runs")
    con = connect(db)
    results: list[IndexResult] = []
    try:
        def write(i: int, outcome: DriveRows | BaseException) -> None:
            path = Path(paths[i])
            if isinstance(outcome, BaseException):
                result = IndexResult(drive_id(path), str(path), False, _describe(outcome))
            else:
                replace_drive(con, outcome.drive, outcome.rows)
                result = IndexResult(outcome.drive, str(path), True, None, outcome.frame_sets, outcome.seconds,
                                     outcome.events)
            results.append(result)
            if progress is not None:
                progress(result)

        map_drives(read_drive_rows, [(Path(p), runs_dir, config) for p in paths], on_result=write, jobs=jobs,
                   ray_address=ray_address, use_ray=use_ray)
        if parquet is not None:
            write_parquet(con, parquet)
    finally:
        con.close()
    order = {str(Path(p)): i for i, p in enumerate(paths)}
    return sorted(results, key=lambda r: order[r.path])


def _describe(error: BaseException) -> str:
    return str(error) if isinstance(error, PerceptionError) else f"{type(error).__name__}: {error}"
