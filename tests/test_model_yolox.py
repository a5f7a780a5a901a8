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


@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_stream_equals_whole_clip_with_the_yolox_backbone(activation):
    from tests.test_model import assert_stream_equals_clip

    torch.manual_seed(0)
    model = TemporalCenterNet(ModelConfig.from_dict({**TINY.to_dict(), "yolox_activation": activation})).eval()
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


def test_folded_focus_stem_equals_the_teachers_focus_on_its_pixels():
    """One 6x6 stride-2 convolution on normalised RGB computes YOLOX's Focus stem on BGR 0-255 (flip, affine,
    space-to-depth, 3x3 convolution with black padding), the image border included."""
    from perception.model.network import _FocusStem
    from perception.model.yolox import fold_focus_stem

    cfg = ModelConfig(backbone="yolox-nano")
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(16, 12, 3, 3, generator=g) * 0.05, torch.randn(16, generator=g)
    rgb = torch.rand(2, 3, 32, 48, generator=g)
    bgr255 = rgb.flip(1) * 255.0
    focus = torch.cat([bgr255[:, :, 0::2, 0::2], bgr255[:, :, 1::2, 0::2], bgr255[:, :, 0::2, 1::2],
                       bgr255[:, :, 1::2, 1::2]], 1)
    ref = torch.nn.functional.silu(torch.nn.functional.conv2d(focus, weight, bias, padding=1))
    stem = _FocusStem(cfg.mean, cfg.std)
    with torch.no_grad():
        stem.conv.weight.copy_(torch.from_numpy(fold_focus_stem(weight.numpy(), cfg.std)))
        stem.conv.bias.copy_(bias)
        x = (rgb - torch.tensor(cfg.mean).reshape(1, 3, 1, 1)) / torch.tensor(cfg.std).reshape(1, 3, 1, 1)
        got = stem(x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-3 * float(ref.abs().max()), rtol=0)
    with pytest.raises(ModelContractError, match=r"expected \[C, 12, 3, 3\]"):
        fold_focus_stem(np.zeros((16, 3, 6, 6), np.float32), cfg.std)


def test_a_checkpoint_with_the_unfolded_focus_stem_loads_folded(tmp_path):
    """Checkpoints written before the fold hold the [16, 12, 3, 3] Focus weight: read_checkpoint's model
    loader and `--init` fold it, and the network computes what it computed."""
    from perception.model.checkpoint import load_model, save_checkpoint
    from perception.model.train import initialise
    from perception.model.yolox import fold_focus_stem

    torch.manual_seed(1)
    model = TemporalCenterNet(TINY).eval()
    unfolded = torch.randn(16, 12, 3, 3) * 0.05
    with torch.no_grad():
        model.backbone.stem.conv.weight.copy_(torch.from_numpy(fold_focus_stem(unfolded.numpy(), TINY.std)))
    save_checkpoint(tmp_path / "new.pt", model, "t")
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    state = payload["model"]
    state["backbone.stem.0.weight"], state["backbone.stem.0.bias"] = unfolded, state.pop("backbone.stem.conv.bias")
    del state["backbone.stem.conv.weight"]
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    initialised = TemporalCenterNet(TINY).eval()     # `perception train --init old.pt`
    assert initialise(initialised, str(tmp_path / "old.pt"), "all") == len(model.state_dict())
    images = torch.randn(1, 3, TINY.input_height, TINY.input_width)
    with torch.no_grad():
        torch.testing.assert_close(loaded.backbone(images), model.backbone(images))
        torch.testing.assert_close(initialised.backbone(images), model.backbone(images))


def test_relu_student_starts_from_a_silu_checkpoint_and_exports_without_a_silu_pass(tmp_path):
    """`yolox_activation: relu` (tried as the demo build's phase 2, docs/model.md "Latency"): every weight of a SiLU checkpoint carries over
    (`--init`), the backbone has no SiLU left, and the exported graph no Sigmoid but the heatmap's (a ReLU
    fuses into its convolution in ONNX Runtime and TensorRT; SiLU runs as a pass of its own)."""
    from perception.model.checkpoint import save_checkpoint
    from perception.model.export import export_onnx
    from perception.model.train import initialise

    relu = ModelConfig.from_dict({**TINY.to_dict(), "yolox_activation": "relu"})
    torch.manual_seed(2)
    silu_model = TemporalCenterNet(TINY).eval()
    save_checkpoint(tmp_path / "silu.pt", silu_model, "t")
    model = TemporalCenterNet(relu).eval()
    assert initialise(model, str(tmp_path / "silu.pt"), "all") == len(silu_model.state_dict())
    kinds = {type(m) for m in model.backbone.modules()}
    assert torch.nn.ReLU in kinds and torch.nn.SiLU not in kinds
    sigmoids = {}
    for name, m in (("relu", model), ("silu", silu_model)):
        export_onnx(m, tmp_path / f"{name}.onnx", name)
        sigmoids[name] = [n.op_type for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node].count("Sigmoid")
    assert sigmoids["relu"] == 1 and sigmoids["silu"] == 1 + 70     # the heatmap's; + YOLOX-Nano's 70 SiLUs


def test_an_unknown_yolox_activation_is_a_config_error():
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match="yolox_activation must be 'silu' or 'relu', got 'gelu'"):
        ModelConfig(backbone="yolox-nano", yolox_activation="gelu")
