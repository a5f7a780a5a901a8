"""The tracker's configuration (fields declared with perception.config_base.param)."""

from __future__ import annotations

from dataclasses import dataclass

from perception.config_base import ConfigBase, param


@dataclass(frozen=True)
class TrackerConfig(ConfigBase):
    """Per-camera image tracking (two-stage IoU matching), vehicle-frame fusion and the ego geometry."""

    high_score: float = param(0.5, "detections at or above this score are matched first and may start tracks",
                              gt=0.0, le=1.0)
    low_score: float = param(0.1, "detections below this score are ignored; [low, high) only extend tracks",
                             ge=0.0, le=1.0)
    new_track_score: float = param(0.6, "minimum score of an unmatched detection to start a new track",
                                   gt=0.0, le=1.0)
    min_iou: float = param(0.2, "minimum IoU between a track's predicted box and a detection to match them",
                           gt=0.0, lt=1.0)
    centre_gate_chi2: float = param(9.21, "third matching stage: confident detections no track overlaps join the "
                                    "unmatched track of their class whose predicted centre is within this squared "
                                    "Mahalanobis distance (box height within 1.5x; 0: off)", ge=0.0)
    confirm_hits: int = param(3, "matched frames after which a track is confirmed (and published)", ge=1)
    max_misses: int = param(10, "consecutive frames of its camera a confirmed track may coast before it is dropped",
                            ge=0)
    max_coast_s: float = param(0.5, "a track without a match for this long is dropped (covers stale cameras)",
                               unit="s", gt=0.0)
    box_noise_rel: float = param(0.05, "std of a detection's box coordinates, as a fraction of its height", gt=0.0)
    box_noise_min_px: float = param(1.0, "floor of the box coordinate std", unit="px", gt=0.0)
    image_accel_std_px_s2: float = param(400.0, "process noise: std of the box centre's image acceleration",
                                         unit="px/s^2", gt=0.0)
    size_accel_std_rel: float = param(1.0, "process noise: std of the box size's acceleration, per unit height",
                                      unit="1/s^2", gt=0.0)
    use_image_velocity: bool = param(False, "fuse the model's image-velocity head into the box filter (off: the "
                                     "demo model's head misses fast image motion, docs/evaluation.md)")
    image_velocity_std_px_s: float = param(40.0, "std of the image-velocity head", unit="px/s", gt=0.0)
    initial_image_velocity_std_px_s: float = param(200.0, "std of a new track's box velocity when the head "
                                                   "gives none", unit="px/s", gt=0.0)
    score_smoothing: float = param(0.3, "weight of the newest detection score in the track's score average",
                                   gt=0.0, le=1.0)
    jerk_std_mps3: float = param(20.0, "process noise of the vehicle-frame filter (constant relative "
                                 "acceleration): std of the relative jerk", unit="m/s^3", gt=0.0)
    initial_velocity_std_mps: float = param(10.0, "std of a new object's (unknown) relative velocity",
                                            unit="m/s", gt=0.0)
    initial_acceleration_std_mps2: float = param(3.0, "std of a new object's (unknown) relative acceleration",
                                                 unit="m/s^2", gt=0.0)
    fusion_gate_chi2: float = param(13.8, "gate on the squared Mahalanobis distance between a camera track's "
                                    "vehicle-frame position and a fused object (13.8: 99.9 % for 2 dof)", gt=0.0)
    fusion_extent_std_m: float = param(0.7, "extra position std when associating cameras: different cameras see "
                                       "different faces of the same object", unit="m", ge=0.0)
    full_confidence_hits: int = param(10, "measurement updates after which hits no longer limit the confidence",
                                      ge=1)
    stale_tau_s: float = param(0.3, "time constant of the confidence decay while an object is not measured",
                               unit="s", gt=0.0)
    ego_front_m: float = param(3.7, "x of the ego front bumper in the vehicle frame (gaps and TTC are measured "
                               "from it)", unit="m", ge=0.0)

    def check(self) -> None:
        if self.low_score > self.high_score:
            raise self.invalid("low_score", f"must be <= high_score ({self.high_score}), got {self.low_score}")
        if self.new_track_score < self.high_score:
            raise self.invalid("new_track_score",
                               f"must be >= high_score ({self.high_score}), got {self.new_track_score}")
