"""Filling the published messages from the node's results (kept apart from computing them)."""

from __future__ import annotations

import numpy as np

from perception.hints.hints import ControlHints
from perception.messaging.schemas import (
    DetectionsMessage,
    Diagnostics,
    HealthMessage,
    HintsMessage,
    WireLead,
    WireObjects,
)
from perception.node.health import HealthReport
from perception.track.objects import TrackedObjects


def diagnostics(model_id: str, cameras: tuple[str, ...], capture_ns: np.ndarray, dropped: np.ndarray,
                stage_ns: dict[str, int]) -> Diagnostics:
    return Diagnostics(model_id, cameras, capture_ns.copy(), dropped.copy(), dict(stage_ns))


def detections_message(diag: Diagnostics, frame_ns: int, fresh: np.ndarray, classes: tuple[str, ...],
                       objects: TrackedObjects) -> DetectionsMessage:
    wire = WireObjects(
        track_id=objects.global_id, camera=objects.camera, cls=objects.cls, score=objects.score,
        box=objects.box, range_m=objects.range_m, range_source=objects.range_source,
        position=objects.position, velocity=objects.velocity, ttc_s=objects.ttc_s, age_s=objects.age_s,
        coasting=objects.coasting,
    )
    return DetectionsMessage(diag, frame_ns, ~fresh, classes, wire)


def hints_message(diag: Diagnostics, hints: ControlHints) -> HintsMessage:
    lead = None
    if hints.lead is not None:
        lead = WireLead(hints.lead.global_id, hints.lead.gap_m, hints.lead.relative_speed_mps, hints.lead.ttc_s)
    return HintsMessage(diag, hints.t_ns, lead, hints.brake.name.lower(), hints.speed_cap_mps,
                        hints.free_distance_m, np.asarray(hints.cut_in_ids, np.int64), hints.confidence)


def health_message(diag: Diagnostics, report: HealthReport, publish_drops: int) -> HealthMessage:
    return HealthMessage(diag, report.state, report.reasons, report.camera_states, report.latency_p50_ms,
                         report.latency_p99_ms, report.rate_hz, report.drop_ratio, report.bad_frames,
                         publish_drops)
