"""The bundled model `perception run` uses when no model is configured."""

from __future__ import annotations

import sys
from pathlib import Path

# the bundled models live in the checkout (models/, with their manifest and build script); `pip install .`
# ships a copy under <prefix>/share/perception/models (setup.py data_files)
_CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "models"
_MODELS = (_CHECKOUT_MODELS if (_CHECKOUT_MODELS / "demo.onnx").exists()
           else Path(sys.prefix) / "share" / "perception" / "models")
DEMO_MODEL = _MODELS / "demo.onnx"
# its mixed-precision INT8 copy: models/build_demo.py keeps it only when it loses <= 1 point of mAP on the
# held-out drives (models/demo.json, "int8")
DEMO_MODEL_INT8 = _MODELS / "demo.int8.onnx"


def default_model(engine_kind: str) -> Path:
    """The bundled model for `model: null`: on ONNX Runtime the INT8 copy where the build kept it (as
    accurate and faster there: docs/model.md), else the fp32 model (TensorRT builds its own precisions from
    the fp32 graph; the torch engine reads float convolutions)."""
    if engine_kind == "onnxruntime" and DEMO_MODEL_INT8.exists():
        return DEMO_MODEL_INT8
    return DEMO_MODEL
