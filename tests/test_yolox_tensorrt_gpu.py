"""The shared YOLOX-Nano on TensorRT (perception/engine/tensorrt_detector.py) against ONNX Runtime, on a
real dashcam still. Skipped without an NVIDIA GPU (conftest) or without TensorRT / pycuda."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.gpu
pytest.importorskip("tensorrt", reason="needs TensorRT (pip install perception[gpu])")
pytest.importorskip("pycuda.driver", reason="needs pycuda")

from perception.engine.onnxruntime import open_detector  # noqa: E402
from perception.engine.tensorrt_detector import TensorRTDetector  # noqa: E402
from tests.test_yolox_decode import CARD, STILL, YOLOX, needs_shared, yolox_preprocess  # noqa: E402


@needs_shared
def test_tensorrt_detector_matches_onnxruntime_on_two_cameras(tmp_path):
    images, _ = yolox_preprocess(cv2.imread(str(STILL)))
    batch = np.concatenate([images, images[:, :, ::-1].copy()])
    ort = open_detector(YOLOX, card=CARD)
    trt = TensorRTDetector(YOLOX, card=CARD, cache_dir=tmp_path)
    want, _ = ort.run(batch, np.zeros(2, np.int64), ort.initial_state(2))
    got, state = trt.run(batch, np.zeros(2, np.int64), trt.initial_state(2))
    assert state.num_cameras == 2 and got["output"].shape == want["output"].shape == (2, 3549, 85)
    np.testing.assert_allclose(got["output"][..., 4:], want["output"][..., 4:], atol=2e-2)  # scores (TF32)
