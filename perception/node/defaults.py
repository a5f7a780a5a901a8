"""The bundled model `perception run` uses when no model is configured."""

from __future__ import annotations

from pathlib import Path

# the bundled model lives in the checkout (models/, with its manifest and build script): run from a
# checkout installed with `pip install -e .`, as the README does
DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo.onnx"
