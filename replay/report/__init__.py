"""The replay report: one self-contained HTML file (metric tables, plots, a contact sheet of the worst
frames with boxes drawn) and optionally an overlay video (docs/replay.md).

    build_report("run.mcap", "report.html", drive="drive.mcap", video="overlay.mp4")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from perception.errors import DriveError
from replay.metrics import MetricsConfig, RunMetrics, drive_for, evaluate_run, ground_truth_for
from perception.io.run_file import load_run


@dataclass(frozen=True)
class ReportSummary:
    html: Path
    video: Path | None
    video_frames: int
    tiles: int
    metrics: RunMetrics


EMBED_VIDEO_BYTES = 64 * 2**20   # larger overlay videos are linked (by file name), not embedded


def build_report(run_path: str | Path, out: str | Path, *, drive: str | Path | None = None,
                 video: str | Path | None = None, config: MetricsConfig | None = None) -> ReportSummary:
    """Writes the report of `run_path` to `out` (HTML). Frames and ground truth come from `drive`, else from
    the run itself when its inputs were copied, else from the drive its metadata names; without any, the
    report has the latency and output plots only (and no video can be drawn)."""
    from perception.io.drive import DriveReader, open_drive
    from replay.report.frames import contact_sheet, write_video
    from replay.report.html import render
    from replay.report.plots import bird_eye_view, plot_all

    config = config or MetricsConfig()
    run = load_run(run_path)
    labels = ground_truth_for(run, drive)
    metrics = evaluate_run(run, labels, config)
    drive_path = drive_for(run, drive)
    start = min((m.t_ns for m in run.detections[:1] + run.hints[:1] + run.health[:1]), default=0)
    plots = plot_all(run, metrics, start)
    bev = bird_eye_view(run, labels)
    if bev is not None:
        plots.append(("Bird-eye view", bev))
    tiles, frames = [], 0
    if drive_path is not None:
        opened = DriveReader(drive_path) if drive_path == run.path else open_drive(drive_path)
        try:
            if tuple(opened.cameras) != run.rig.names:
                raise DriveError(f"{drive_path}: cameras {', '.join(opened.cameras)} are not the run's "
                                 f"({', '.join(run.rig.names)}); is this the drive the run was replayed from?")
            tiles = contact_sheet(run, metrics, opened, config.min_iou)
            if video is not None:
                by_frame = {(im.camera, im.t_ns): im for im in metrics.images} if labels else None
                frames = write_video(run, opened, Path(video), by_frame, config.min_iou)
        finally:
            opened.close()
    elif video is not None:
        raise DriveError(f"{run.path}: no camera frames to draw the video on: the run has no copied inputs and "
                         "names no drive (pass the drive)")
    out = Path(out)
    video_data = Path(video).read_bytes() if video is not None and Path(video).stat().st_size <= EMBED_VIDEO_BYTES \
        else None
    text = render(run, metrics, config, plots, tiles, drive_path.name if drive_path else None,
                  Path(video).name if video is not None else None, video_data)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return ReportSummary(out, Path(video) if video is not None else None, frames, len(tiles), metrics)


__all__ = ["ReportSummary", "build_report"]
