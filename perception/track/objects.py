"""The tracker's output for one frame set: fused objects as parallel arrays, one row per object.

Units and frames: positions in the vehicle frame (ISO 8855: x forward, y left, z up; m, origin on the
ground under the rear axle); velocities are relative to the ego vehicle, in the vehicle frame (m/s; ego
rotation is not compensated; z components are 0). The position is the centre of the object's footprint at road height (x, y
as `GroundTruthObject.position`, z = the road plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrackedObjects:
    t_ns: int                    # frame-set time the states are predicted to, ns
    ego_front_m: float           # x of the ego front bumper (m); gaps and TTC are measured from (ego_front_m, 0)
    global_id: np.ndarray        # [N] int64, fused object id, unique over the node's lifetime, never reused
    camera_track_id: np.ndarray  # [N, C] int64, the per-camera track id of this object in camera c, -1 if none
    cls: np.ndarray              # [N] int32, index into perception.labels.CLASSES
    score: np.ndarray            # [N] float32, smoothed detection score in [0, 1]
    camera: np.ndarray           # [N] int32, camera whose track was measured last (the box's camera)
    box: np.ndarray              # [N, 4] float32, x0 y0 x1 y1 in that camera's pixels (predicted if coasting)
    position: np.ndarray         # [N, 3] float32, m, vehicle frame
    velocity: np.ndarray         # [N, 3] float32, m/s, relative to ego, vehicle frame
    acceleration: np.ndarray     # [N, 3] float32, m/s^2, relative to ego, vehicle frame
    position_std: np.ndarray     # [N, 2] float32, m, std of position x, y (frame-to-frame noise; see ranging)
    velocity_std: np.ndarray     # [N, 2] float32, m/s, std of velocity x, y
    footprint_m: np.ndarray      # [N, 2] float32, m, typical (length, width) of the class (assumed, not measured)
    range_m: np.ndarray          # [N] float32, horizontal distance from the vehicle origin, m
    range_source: np.ndarray     # [N] uint8, perception.track.RangeSource of the last measurement
    gap_m: np.ndarray            # [N] float32, m, from the ego front bumper centre to the object's nearest edge
    closing_speed_mps: np.ndarray  # [N] float32, m/s, rate at which the gap shrinks (negative: opening)
    closing_speed_std_mps: np.ndarray  # [N] float32, m/s, its std
    ttc_s: np.ndarray            # [N] float32, s, gap / closing speed; inf unless ahead and closing
    age_s: np.ndarray            # [N] float32, s since the object was first seen
    hits: np.ndarray             # [N] int32, measurements (camera frames) fused into the object
    coasting: np.ndarray         # [N] bool, not measured in this frame set (state is a prediction)
    confidence: np.ndarray       # [N] float32 in [0, 1]: score x track maturity x freshness
    camera_age_s: np.ndarray     # [C] float32, s since each camera's last frame (inf: never)
    camera_sees_ahead: np.ndarray  # [C] bool, the camera sees the ego corridor ahead

    def __len__(self) -> int:
        return int(self.global_id.shape[0])
