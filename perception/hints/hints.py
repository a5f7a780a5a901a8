"""Control hints for planners, from the tracked objects of one frame set.

- Lead: the nearest object ahead of the ego front bumper whose reference point lies in the ego corridor
  (|y| <= corridor_half_width_m).
- Brake stage none / prepare / brake from the lead's TTC and gap. The TTC judged is a cautious one, with the
  closing speed raised by ttc_margin_sigma standard deviations of its estimate. A stage is entered as soon as its "on"
  threshold is crossed; it is left only when the TTC and the gap are back beyond the looser "off"
  thresholds AND the stage has been held for min_hold_s of frame-set time, so a noisy TTC around a
  threshold does not make the hint flicker.
- Speed cap: the speed from which the ego stops at comfort_decel_mps2 within the free distance minus the
  standstill gap, v = sqrt(2 a max(0, free - standstill)); conservative: the lead is treated as an
  obstacle that may stop at once.
- Cut-ins: objects ahead whose near side is outside the corridor by at most adjacent_lane_width_m, moving
  towards it faster than cut_in_lateral_speed_mps and reaching its edge within cut_in_horizon_s.
- Confidence: the lead's confidence; without a lead, the freshness of the cameras that see ahead (a free
  corridor is only as trustworthy as the newest frame that showed it).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from perception.hints.config import HintsConfig
from perception.track.objects import TrackedObjects


class BrakeStage(enum.IntEnum):
    NONE = 0
    PREPARE = 1
    BRAKE = 2


@dataclass(frozen=True)
class Lead:
    global_id: int
    gap_m: float               # from the ego front bumper to the lead's nearest edge (TrackedObjects.gap_m)
    range_m: float             # horizontal distance from the vehicle origin (TrackedObjects.range_m)
    relative_speed_mps: float  # longitudinal velocity relative to ego; negative = closing
    ttc_s: float               # gap / closing speed, inf when not closing (TrackedObjects.ttc_s)
    brake_ttc_s: float         # the TTC the brake stages judge: closing speed + ttc_margin_sigma of its std
                               # (inf while the lead is younger than ttc_min_age_s)
    confidence: float


@dataclass(frozen=True)
class ControlHints:
    t_ns: int
    lead: Lead | None
    brake: BrakeStage
    speed_cap_mps: float
    free_distance_m: float     # gap to the lead, or max_free_distance_m without one
    cut_in_ids: tuple[int, ...]  # global ids of objects cutting in, nearest first
    confidence: float          # in [0, 1]


def speed_cap(free_distance_m: float, config: HintsConfig) -> float:
    """Highest speed (m/s) from which the ego stops within the free distance, keeping the standstill gap."""
    return math.sqrt(2.0 * config.comfort_decel_mps2 * max(0.0, free_distance_m - config.standstill_gap_m))


class HintGenerator:
    """Holds the brake stage between frame sets; `update` is called once per frame set, in time order."""

    def __init__(self, config: HintsConfig | None = None):
        self.config = config or HintsConfig()
        self.stage = BrakeStage.NONE
        self._stage_since_ns = 0

    def update(self, objects: TrackedObjects) -> ControlHints:
        cfg = self.config
        lead = self._lead(objects)
        raised = self._stage_for(lead, on=True)
        if raised > self.stage:
            self.stage, self._stage_since_ns = raised, objects.t_ns
        elif self.stage > BrakeStage.NONE and (objects.t_ns - self._stage_since_ns) * 1e-9 >= cfg.min_hold_s:
            held = self._stage_for(lead, on=False)
            if held < self.stage:
                self.stage, self._stage_since_ns = held, objects.t_ns

        free = cfg.max_free_distance_m if lead is None else min(max(lead.gap_m, 0.0), cfg.max_free_distance_m)
        if lead is not None:
            confidence = lead.confidence
        else:
            ages = objects.camera_age_s[objects.camera_sees_ahead]
            confidence = math.exp(-float(ages.min()) / cfg.free_corridor_tau_s) if ages.size else 0.0
        return ControlHints(objects.t_ns, lead, self.stage, speed_cap(free, cfg), free, self._cut_ins(objects),
                            confidence)

    def _usable(self, objects: TrackedObjects) -> np.ndarray:
        return (objects.confidence >= self.config.min_confidence) & (objects.position[:, 0] > objects.ego_front_m)

    def _lead(self, objects: TrackedObjects) -> Lead | None:
        candidates = np.flatnonzero(self._usable(objects)
                                    & (np.abs(objects.position[:, 1]) <= self.config.corridor_half_width_m))
        if candidates.size == 0:
            return None
        k = candidates[np.argmin(objects.gap_m[candidates])]
        gap = float(objects.gap_m[k])
        closing_std = float(objects.closing_speed_std_mps[k])
        closing = float(objects.closing_speed_mps[k]) + self.config.ttc_margin_sigma * closing_std
        if objects.age_s[k] < self.config.ttc_min_age_s:
            closing = 0.0
        return Lead(int(objects.global_id[k]), gap, float(objects.range_m[k]), float(objects.velocity[k, 0]),
                    float(objects.ttc_s[k]), gap / closing if closing > 0 else math.inf, float(objects.confidence[k]))

    def _stage_for(self, lead: Lead | None, on: bool) -> BrakeStage:
        """The most severe stage whose thresholds (the "on" or the looser "off" ones) the lead violates."""
        if lead is None:
            return BrakeStage.NONE
        c = self.config
        brake_ttc, brake_gap = (c.brake_ttc_on_s, c.brake_gap_on_m) if on else (c.brake_ttc_off_s, c.brake_gap_off_m)
        prepare_ttc, prepare_gap = ((c.prepare_ttc_on_s, c.prepare_gap_on_m) if on
                                    else (c.prepare_ttc_off_s, c.prepare_gap_off_m))
        if lead.brake_ttc_s < brake_ttc or lead.gap_m < brake_gap:
            return BrakeStage.BRAKE
        if lead.brake_ttc_s < prepare_ttc or lead.gap_m < prepare_gap:
            return BrakeStage.PREPARE
        return BrakeStage.NONE

    def _cut_ins(self, objects: TrackedObjects) -> tuple[int, ...]:
        c = self.config
        y = objects.position[:, 1].astype(np.float64)
        vy = objects.velocity[:, 1].astype(np.float64)
        outside = np.abs(y) - objects.footprint_m[:, 1] / 2 - c.corridor_half_width_m  # its near side to the edge
        inward_speed = -np.sign(y) * vy
        with np.errstate(divide="ignore", invalid="ignore"):
            time_to_edge = outside / inward_speed
        flagged = (self._usable(objects)
                   & (objects.gap_m <= c.cut_in_max_gap_m)
                   & (outside > 0) & (outside <= c.adjacent_lane_width_m)
                   & (inward_speed >= c.cut_in_lateral_speed_mps) & (time_to_edge <= c.cut_in_horizon_s))
        rows = np.flatnonzero(flagged)
        rows = rows[np.argsort(objects.gap_m[rows], kind="stable")]
        return tuple(int(i) for i in objects.global_id[rows])
