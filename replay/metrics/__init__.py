"""Metrics of a run (docs/replay.md): latency always; with the drive's ground truth also detection mAP per
difficulty level (the one protocol of perception/eval, docs/evaluation.md), invented objects per frame,
tracking MOTA / IDF1 / ID switches, range / velocity / TTC errors by distance and brake-hint
precision / recall.

    metrics = evaluate_run(load_run("run.mcap"), ground_truth_for(run))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from perception.errors import DriveError
from perception.labels import GroundTruth
from replay.metrics.align import EvalImage, align
from replay.metrics.config import MetricsConfig
from perception.eval import MODERATE, DetectionMetrics, unmatched_per_frame
from replay.metrics.detection import evaluate_levels, scored_frames
from replay.metrics.hints import HintMetrics, evaluate_hints
from replay.metrics.kinematics import KinematicErrors, evaluate_kinematics
from replay.metrics.latency import LatencyMetrics, latency_metrics
from replay.metrics.tracking import TrackingMetrics, evaluate_tracking
from perception.io.run_file import Run


@dataclass(frozen=True)
class RunMetrics:
    latency: LatencyMetrics
    images: list[EvalImage]                 # labelled camera frames with their detections (empty: no labels)
    unused_frames: int                      # labelled frames no frame set used (dropped)
    detection: DetectionMetrics | None      # at the moderate level; None: no ground truth
    detection_levels: dict[str, DetectionMetrics]  # easy / moderate / hard
    unmatched_per_frame: float              # objects overlapping no labelled box (IoU < 0.3), per camera frame
    tracking: TrackingMetrics | None
    kinematics: KinematicErrors | None
    hints: HintMetrics | None


def evaluate_run(run: Run, ground_truth: Sequence[GroundTruth] | None,
                 config: MetricsConfig | None = None) -> RunMetrics:
    config = config or MetricsConfig()
    latency = latency_metrics(run.detections, run.health)
    if not ground_truth:
        return RunMetrics(latency, [], 0, None, {}, float("nan"), None, None, None)
    images = align(run.detections, ground_truth, run.rig.names, config.min_iou)
    widths = {name: run.rig[name].width for name in run.rig.names}
    levels = evaluate_levels(images, widths, config.max_dets)
    return RunMetrics(
        latency, images, sum(1 for im in images if im.frame_ns is None),
        levels[MODERATE.name], levels, unmatched_per_frame(scored_frames(images, widths, MODERATE)),
        evaluate_tracking(images, config.min_iou),
        evaluate_kinematics(images, config.min_iou, config.ego_front_m, config.ttc_horizon_s),
        evaluate_hints(run.hints, ground_truth, config))


def drive_for(run: Run, drive: str | Path | None = None) -> Path | None:
    """Where the run's inputs are: `drive` if given, the run itself when the inputs were copied into it, else
    the drive its metadata names (None if it names none). A named drive that is missing is an error."""
    if drive is not None:
        path = Path(drive)
    elif run.has_inputs:
        return run.path
    elif run.drive_path is not None:
        path = run.drive_path
    else:
        return None
    if not path.exists():
        raise DriveError(f"{run.path}: its drive {path} does not exist (pass the drive's path)")
    return path


def ground_truth_for(run: Run, drive: str | Path | None = None) -> list[GroundTruth] | None:
    """The ground truth of the run's drive (see drive_for); None when there is no drive or it has no labels
    (ROS 2 bags and video files have none)."""
    from perception.io.drive import DriveReader, open_drive

    path = drive_for(run, drive)
    if path is None:
        return None
    opened = DriveReader(path) if path == run.path else open_drive(path)
    try:
        if not isinstance(opened, DriveReader):
            return None
        labels = list(opened.ground_truth())
    finally:
        opened.close()
    return labels or None


__all__ = ["MetricsConfig", "RunMetrics", "drive_for", "evaluate_run", "ground_truth_for"]
