"""The transfer-learned student backbone from the YOLOX-Nano teacher (perception/model/yolox.py); the teacher's
decode is tested with the plug-in path (tests/test_yolox_decode.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from perception.errors import ModelContractError  # noqa: E402
from perception.model.config import ModelConfig  # noqa: E402
from perception.model.network import TemporalCenterNet  # noqa: E402
from perception.model.yolox import CLS_TOWER, REG_TOWER, load_teacher_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TEACHER = SHARED / "models" / "yolox_nano.onnx"
needs_teacher = pytest.mark.skipif(not TEACHER.exists(), reason=f"{TEACHER} absent (shared test data)")
TINY = ModelConfig(backbone="yolox-nano", input_height=64, input_width=96, feature_channels=8, head_channels=8,
                   window=3, max_age_s=0.25)


def test_stream_equals_whole_clip_with_the_yolox_backbone():
    from tests.test_model import assert_stream_equals_clip

    torch.manual_seed(0)
    model = TemporalCenterNet(TINY).eval()
    clip = torch.randn(2, 5, 3, TINY.input_height, TINY.input_width)
    dt = torch.full((2, 5), 0.05)
    dt[1, 2] = 0.4                       # history masked
    fresh = torch.ones(2, 5)
    fresh[0, 3] = 0.0                    # stale camera
    assert_stream_equals_clip(model, clip, dt, fresh, ("heatmap", "size", "offset", "velocity", "log_depth"))


@needs_teacher
def test_student_backbone_equals_the_teacher_graph():
    """The student's pretrained part computes the teacher's own stride-8 head towers (ONNX Runtime)."""
    cfg = ModelConfig(backbone="yolox-nano", input_height=416, input_width=416)
    model = TemporalCenterNet(cfg).eval()
    assert load_teacher_weights(model.backbone, TEACHER) == len(model.backbone.pretrained_convs())
    graph = onnx.load(str(TEACHER))
    for name in (CLS_TOWER, REG_TOWER):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    bgr = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    ref = session.run([CLS_TOWER, REG_TOWER], {"images": bgr})
    # the node's input: RGB, normalised by the contract's mean / std
    rgb = bgr[:, ::-1] / 255.0
    x = (rgb - np.reshape(cfg.mean, (1, 3, 1, 1))) / np.reshape(cfg.std, (1, 3, 1, 1))
    got = {}
    b = model.backbone
    b.cls_tower.register_forward_hook(lambda m, i, o: got.__setitem__(CLS_TOWER, o))
    b.reg_tower.register_forward_hook(lambda m, i, o: got.__setitem__(REG_TOWER, o))
    with torch.no_grad():
        b(torch.from_numpy(x.astype(np.float32)))
    for name, r in zip((CLS_TOWER, REG_TOWER), ref):
        np.testing.assert_allclose(got[name].numpy(), r, atol=2e-4 * float(np.abs(r).max()))


def test_weights_from_another_graph_are_refused():
    model = TemporalCenterNet(TINY)
    with pytest.raises(ModelContractError, match="not the published YOLOX-Nano export"):
        load_teacher_weights(model.backbone, ROOT / "models" / "demo.onnx")
