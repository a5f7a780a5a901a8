"""Thresholds of the control hints; every one documented with its unit, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

from perception.config_base import ConfigBase, param


@dataclass(frozen=True)
class HintsConfig(ConfigBase):
    corridor_half_width_m: float = param(1.75, "half-width of the ego corridor around y = 0 (objects whose "
                                         "centre is inside may be the lead)", unit="m", gt=0.0)
    min_confidence: float = param(0.2, "objects below this confidence are ignored by every hint", ge=0.0, le=1.0)
    prepare_ttc_on_s: float = param(4.0, "prepare when the lead's TTC falls below", unit="s", gt=0.0)
    prepare_ttc_off_s: float = param(5.0, "leave prepare only when the TTC is above", unit="s", gt=0.0)
    brake_ttc_on_s: float = param(2.0, "brake when the lead's TTC falls below", unit="s", gt=0.0)
    brake_ttc_off_s: float = param(2.5, "leave brake only when the TTC is above", unit="s", gt=0.0)
    ttc_margin_sigma: float = param(1.5, "the brake stages judge the TTC with the closing speed raised by this many "
                                    "of its standard deviations, so an uncertain closing speed errs early", ge=0.0)
    ttc_min_age_s: float = param(0.75, "the TTC thresholds apply to a lead tracked at least this long (a new "
                                 "track's closing speed is still settling); the gap thresholds always apply",
                                 unit="s", ge=0.0)
    prepare_gap_on_m: float = param(8.0, "prepare when the gap to the lead falls below", unit="m", gt=0.0)
    prepare_gap_off_m: float = param(10.0, "leave prepare only when the gap is above", unit="m", gt=0.0)
    brake_gap_on_m: float = param(4.0, "brake when the gap to the lead falls below", unit="m", gt=0.0)
    brake_gap_off_m: float = param(5.0, "leave brake only when the gap is above", unit="m", gt=0.0)
    min_hold_s: float = param(0.5, "a stage is held at least this long (frame-set time) before it is lowered; "
                              "raising is immediate", unit="s", ge=0.0)
    comfort_decel_mps2: float = param(2.0, "deceleration the speed cap assumes", unit="m/s^2", gt=0.0)
    standstill_gap_m: float = param(4.0, "gap to keep when stopped behind the lead", unit="m", ge=0.0)
    max_free_distance_m: float = param(150.0, "free distance when no lead is tracked (reliable sensing range)",
                                       unit="m", gt=0.0)
    adjacent_lane_width_m: float = param(3.5, "width of the band beside the corridor watched for cut-ins",
                                         unit="m", gt=0.0)
    cut_in_lateral_speed_mps: float = param(0.5, "minimum lateral speed towards the corridor of a cut-in",
                                            unit="m/s", gt=0.0)
    cut_in_horizon_s: float = param(3.0, "a cut-in must reach the corridor edge within this time", unit="s",
                                    gt=0.0)
    cut_in_max_gap_m: float = param(60.0, "cut-ins are watched up to this far ahead of the bumper", unit="m",
                                    gt=0.0)
    free_corridor_tau_s: float = param(0.3, "without a lead, the confidence decays with the age of the freshest "
                                       "camera that sees ahead, with this time constant", unit="s", gt=0.0)

    def check(self) -> None:
        for stage in ("prepare", "brake"):
            for quantity, unit in (("ttc", "s"), ("gap", "m")):
                on = getattr(self, f"{stage}_{quantity}_on_{unit}")
                off = getattr(self, f"{stage}_{quantity}_off_{unit}")
                if off <= on:
                    raise self.invalid(f"{stage}_{quantity}_off_{unit}",
                                       f"must be > {stage}_{quantity}_on_{unit} ({on}) for hysteresis, got {off}")
        for quantity, unit in (("ttc", "s"), ("gap", "m")):
            for edge in ("on", "off"):
                brake = getattr(self, f"brake_{quantity}_{edge}_{unit}")
                prepare = getattr(self, f"prepare_{quantity}_{edge}_{unit}")
                if brake >= prepare:
                    raise self.invalid(f"brake_{quantity}_{edge}_{unit}",
                                       f"must be < prepare_{quantity}_{edge}_{unit} ({prepare}), got {brake}")
        if self.standstill_gap_m >= self.max_free_distance_m:
            raise self.invalid("standstill_gap_m",
                               f"must be < max_free_distance_m ({self.max_free_distance_m}), got {self.standstill_gap_m}")
