"""Tracking: per-camera ids, vehicle-frame fusion across cameras, ranging, relative velocity and TTC."""

from perception.track.config import TrackerConfig
from perception.track.objects import TrackedObjects
from perception.track.ranging import RangeEstimates, RangeSource, RangingConfig, estimate_positions
from perception.track.tracker import MultiCameraTracker, gap_and_ttc

__all__ = [
    "MultiCameraTracker", "RangeEstimates", "RangeSource", "RangingConfig", "TrackedObjects",
    "TrackerConfig", "estimate_positions", "gap_and_ttc",
]
