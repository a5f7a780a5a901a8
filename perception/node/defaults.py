"""The bundled model `perception run` uses when no model is configured."""

from __future__ import annotations

import sys
from pathlib import Path

# the bundled model lives in the checkout (models/, with its manifest and build script); `pip install .`
# ships a copy under <prefix>/share/perception/models (setup.py data_files)
_CHECKOUT_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo.onnx"
DEMO_MODEL = (_CHECKOUT_MODEL if _CHECKOUT_MODEL.exists()
              else Path(sys.prefix) / "share" / "perception" / "models" / "demo.onnx")
