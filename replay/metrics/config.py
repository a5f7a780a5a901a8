"""Settings of the metrics; the hint thresholds and ego geometry default to the node's own defaults, so
"needed" means what the node is configured to do."""

from __future__ import annotations

import math
from dataclasses import dataclass

from perception.hints.config import HintsConfig
from perception.config_base import ConfigBase, param
from perception.track.config import TrackerConfig

_HINTS = HintsConfig()
_TRACKER = TrackerConfig()

# ground-truth range bands (m) for range / velocity / TTC errors
DISTANCE_BANDS: tuple[float, ...] = (0.0, 10.0, 20.0, 40.0, 80.0, math.inf)


@dataclass(frozen=True)
class MetricsConfig(ConfigBase):
    min_iou: float = param(0.5, "a detection matches a ground-truth box of its class from this IoU (tracking, "
                           "errors, worst frames; mAP uses its own thresholds)", gt=0.0, le=1.0)
    max_dets: int = param(100, "detections per camera frame and class that mAP considers (COCO: 100)", ge=1)
    ttc_horizon_s: float = param(10.0, "TTCs above this count as 'not closing' in the TTC errors", unit="s", gt=0.0)
    ego_front_m: float = param(_TRACKER.ego_front_m, "x of the ego front bumper: gaps and TTC are measured from it",
                               unit="m", ge=0.0)
    corridor_half_width_m: float = param(_HINTS.corridor_half_width_m, "half-width of the ego corridor in which "
                                         "the ground-truth lead is searched", unit="m", gt=0.0)
    brake_ttc_s: float = param(_HINTS.brake_ttc_on_s, "braking is needed when the ground-truth lead's TTC is "
                               "below this ...", unit="s", gt=0.0)
    brake_gap_m: float = param(_HINTS.brake_gap_on_m, "... or its gap is below this", unit="m", gt=0.0)
    prepare_ttc_s: float = param(_HINTS.prepare_ttc_on_s, "preparing is needed below this TTC ...", unit="s", gt=0.0)
    prepare_gap_m: float = param(_HINTS.prepare_gap_on_m, "... or this gap", unit="m", gt=0.0)
    early_s: float = param(1.0, "a hint that fires up to this long before the need starts still counts for it",
                           unit="s", ge=0.0)
    max_delay_s: float = param(0.3, "a hint is on time when it fires at most this long after the need starts",
                               unit="s", ge=0.0)
    release_s: float = param(1.0, "a hint still on up to this long after the need ended is not a false one "
                             "(hysteresis and hold time)", unit="s", ge=0.0)
