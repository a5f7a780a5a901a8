"""Synthetic drives with exact ground truth (docs/synth.md): `generate_drive`, `cached_drive`, scenarios."""

from replay.synth.generator import (
    IMAGE_FORMATS, SynthConfig, SynthSummary, cache_dir, cached_drive, generate_drive, resize_camera,
)
from replay.synth.scenarios import SCENARIOS

__all__ = ["IMAGE_FORMATS", "SCENARIOS", "SynthConfig", "SynthSummary", "cache_dir", "cached_drive",
           "generate_drive", "resize_camera"]
