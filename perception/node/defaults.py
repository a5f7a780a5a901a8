"""The embedded demo: the bundled model and the synthetic drive `perception run` uses with no arguments."""

from __future__ import annotations

from pathlib import Path

# the bundled model lives in the checkout (models/, with its manifest and build script): run from a
# checkout installed with `pip install -e .`, as the README does
DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo.onnx"

# 3 cameras (front, front-left, front-right of calib.defaults.default_rig) at 960x540 JPEG, 20 Hz, 10 s.
DEMO_DRIVE = dict(seed=2026, seconds=10.0, fps=20.0, num_cameras=3, scenario="mixed", width=960, height=540,
                  image_format="jpeg", jpeg_quality=90)


def demo_drive() -> Path:
    """The demo drive, generated deterministically into the cache on first use (about half a minute)."""
    from replay.synth import cached_drive

    return cached_drive(**DEMO_DRIVE)
