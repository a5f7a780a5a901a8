"""Control hints for planners: lead object, staged brake hint with hysteresis, speed cap, cut-ins."""

from perception.hints.config import HintsConfig
from perception.hints.hints import BrakeStage, ControlHints, HintGenerator, Lead, speed_cap

__all__ = ["BrakeStage", "ControlHints", "HintGenerator", "HintsConfig", "Lead", "speed_cap"]
