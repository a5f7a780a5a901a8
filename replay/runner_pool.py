"""Replaying many drives: one process per drive (up to `jobs` at once), a progress bar, one summary.

    summary = replay_drives(["a.mcap", "b.mcap"], "runs/", config=None, jobs=2)

Each drive is replayed by `replay.runner.replay_drive(drive, out, config)` in its own process (the node's
state, engine and memory are per process; a crash stays with its drive). Runs are written as
`<out>/<drive stem>.run.mcap` (one drive: `out` may name the run file itself); the summary goes to
`<out>/summary.json` and is printed as a table. A drive that fails is reported, and the others go on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from perception.errors import ConfigError, PerceptionError

ReplayFn = Callable[[Path, Path, Any], Any]


@dataclass(frozen=True)
class DriveResult:
    drive: str
    run: str | None
    ok: bool
    error: str | None
    seconds: float
    frame_sets: int = 0
    objects: int = 0
    brake_frames: int = 0
    unhealthy: int = 0            # health messages not "ok"
    engine_mean_ms: float | None = None


@dataclass(frozen=True)
class ReplaySummary:
    results: list[DriveResult]
    summary_path: Path | None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def table(self) -> str:
        rows = [("drive", "result", "frame sets", "objects", "brake", "not ok", "engine ms", "s")]
        for r in self.results:
            rows.append((Path(r.drive).name, "ok" if r.ok else "FAILED", str(r.frame_sets),
                         str(r.objects), str(r.brake_frames), str(r.unhealthy),
                         "-" if r.engine_mean_ms is None else f"{r.engine_mean_ms:.2f}", f"{r.seconds:.1f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in rows]
        lines += [f"{r.drive}: {r.error}" for r in self.results if not r.ok]
        failed = sum(not r.ok for r in self.results)
        lines.append(f"{len(self.results) - failed} of {len(self.results)} drives replayed"
                     + (f", {failed} failed" if failed else ""))
        return "\n".join(lines)


def run_paths(drives: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Where each drive's run goes: `out` itself for one drive named `*.mcap`, else `<out>/<stem>.run.mcap`."""
    out = Path(out)
    if len(drives) == 1 and out.suffix == ".mcap":
        return [out]
    stems = [Path(d).stem for d in drives]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ConfigError(f"drives share the name {duplicates[0]!r}: their runs would overwrite each other in {out}")
    return [out / f"{stem}.run.mcap" for stem in stems]


def replay_drives(drives: Sequence[str | Path], out: str | Path, config: Any = None, jobs: int | None = None,
                  *, replay: ReplayFn | None = None, progress: bool = True, use_ray: bool = False,
                  ray_address: str | None = None) -> ReplaySummary:
    """Replays every drive into its run file (see the module doc); `replay` defaults to
    replay.runner.replay_drive and must be importable by the worker processes. `use_ray` runs one Ray task
    per drive instead (replay/fleet/pool.py: `ray_address`, or a local Ray of `jobs` CPUs)."""
    if not drives:
        raise ConfigError("no drives to replay")
    missing = [str(d) for d in drives if not Path(d).exists()]
    if missing:
        raise ConfigError(f"drive {missing[0]} does not exist")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    runs = run_paths(drives, out)
    runs[0].parent.mkdir(parents=True, exist_ok=True)
    if replay is None:
        from replay.runner import replay_drive as replay
    jobs = min(jobs or os.cpu_count() or 1, len(drives))
    results: dict[int, DriveResult] = {}
    bar = _progress_bar(len(drives), progress)
    try:
        if use_ray:
            from replay.fleet.pool import map_drives

            def finished(i: int, outcome: Any) -> None:
                results[i] = outcome if isinstance(outcome, DriveResult) else DriveResult(
                    str(drives[i]), None, False, str(outcome), 0.0)
                _advance(bar, results[i])

            map_drives(_replay_task, [(Path(d), r, config, replay) for d, r in zip(drives, runs)],
                       on_result=finished, jobs=jobs, use_ray=True, ray_address=ray_address)
        elif jobs == 1:
            for i, (drive, run) in enumerate(zip(drives, runs)):
                results[i] = _replay_one(replay, Path(drive), run, config)
                _advance(bar, results[i])
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                pending: dict[Future, int] = {pool.submit(_replay_one, replay, Path(d), r, config): i
                                              for i, (d, r) in enumerate(zip(drives, runs))}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = pending.pop(future)
                        try:
                            results[i] = future.result()
                        except Exception as e:  # noqa: BLE001 - a worker that died (e.g. killed) fails its drive only
                            results[i] = DriveResult(str(drives[i]), None, False, f"worker died: {e!r}", 0.0)
                        _advance(bar, results[i])
    finally:
        bar.close()
    ordered = [results[i] for i in range(len(drives))]
    summary_path = None if runs == [Path(out)] else Path(out) / "summary.json"
    if summary_path is not None:
        summary_path.write_text(json.dumps([asdict(r) for r in ordered], indent=2) + "\n")
    return ReplaySummary(ordered, summary_path)


def _replay_task(drive: Path, run: Path, config: Any, replay: ReplayFn) -> DriveResult:
    return _replay_one(replay, drive, run, config)


def _advance(bar: Any, result: DriveResult) -> None:
    """One more drive done; the bar also counts the frame sets replayed."""
    bar.frames = getattr(bar, "frames", 0) + result.frame_sets
    bar.set_postfix(frames=bar.frames, refresh=False)
    bar.update(1)


def _replay_one(replay: ReplayFn, drive: Path, run: Path, config: Any) -> DriveResult:
    start = time.monotonic()
    try:
        replay(drive, run, config)
        return _summarize(drive, run, time.monotonic() - start)
    except PerceptionError as e:
        return DriveResult(str(drive), None, False, str(e), time.monotonic() - start)
    except Exception as e:  # noqa: BLE001 - one drive's bug is reported with that drive; the others go on
        return DriveResult(str(drive), None, False, f"{type(e).__name__}: {e}", time.monotonic() - start)


def _summarize(drive: Path, run: Path, seconds: float) -> DriveResult:
    from replay.metrics.latency import stage_times_ms
    from perception.io.run_file import load_run

    recorded = load_run(run)
    engine = stage_times_ms(recorded.detections).get("engine")
    return DriveResult(str(drive), str(run), True, None, seconds, len(recorded.detections),
                       sum(len(m.message.objects) for m in recorded.detections),
                       sum(m.message.brake == "brake" for m in recorded.hints),
                       sum(m.message.state != "ok" for m in recorded.health),
                       float(engine.mean()) if engine is not None and len(engine) else None)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="drive", desc="replay")
