"""The streaming temporal CNN: stream == whole-clip computation, time steps, stale cameras, size counts."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from perception.errors import ConfigError  # noqa: E402
from perception.model.config import ModelConfig  # noqa: E402
from perception.model.network import EMPTY_AGE, OUTPUT_NAMES, TemporalCenterNet, count_macs  # noqa: E402

TINY = ModelConfig(input_height=64, input_width=96, backbone_channels=(8, 8, 16, 16), feature_channels=8,
                   head_channels=8, window=3, max_age_s=0.25)


def tiny_model(seed: int = 0, cfg: ModelConfig = TINY) -> TemporalCenterNet:
    """Random weights with non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TemporalCenterNet(cfg)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model.forward_clip(torch.randn(2, 2, 3, cfg.input_height, cfg.input_width),
                               torch.full((2, 2), 0.1), torch.ones(2, 2))
        # a non-zero displacement / size / range bias so velocity outputs are not trivially zero
        model.head_out.bias.normal_()
    return model.eval()


def stream(model: TemporalCenterNet, clip, dt, fresh) -> list[dict]:
    n = clip.shape[0]
    feats, ages = model.initial_state(n)
    out = []
    with torch.no_grad():
        for t in range(clip.shape[1]):
            res = model(clip[:, t], feats, ages, dt[:, t], fresh[:, t])
            feats, ages = res[-2], res[-1]
            out.append(dict(zip(OUTPUT_NAMES, res)))
    return out


def assert_stream_equals_clip(model: TemporalCenterNet, clip, dt, fresh, names=OUTPUT_NAMES[:6]) -> list[dict]:
    """Streaming `clip` frame by frame equals `forward_clip` at every step to 1e-5 (the outputs `names`);
    returns the streamed outputs."""
    streamed = stream(model, clip, dt, fresh)
    with torch.no_grad():
        offline = model.forward_clip(clip, dt, fresh)
    for step, (s, o) in enumerate(zip(streamed, offline)):
        for name in names:
            torch.testing.assert_close(s[name], o[name], atol=1e-5, rtol=1e-5, msg=f"{name} at step {step}")
    return streamed


def test_stream_equals_whole_clip_with_drops_and_stale_cameras():
    model = tiny_model()
    torch.manual_seed(1)
    n, t = 3, 7
    clip = torch.randn(n, t, 3, TINY.input_height, TINY.input_width)
    dt = torch.full((n, t), 0.05)
    dt[1, 3] = 0.10                      # camera 1 dropped a frame: double step
    dt[2, 5] = 0.40                      # camera 2: gap longer than max_age_s -> history masked
    fresh = torch.ones(n, t)
    fresh[0, 2] = fresh[0, 3] = 0.0      # camera 0 stale for two steps
    streamed = assert_stream_equals_clip(model, clip, dt, fresh)
    assert streamed[-1]["velocity"].abs().max() > 1.0   # the comparison covered non-trivial velocities


def test_stale_camera_holds_features_and_ages_them():
    model = tiny_model()
    n = 2
    feats, ages = model.initial_state(n)
    images = torch.randn(n, 3, TINY.input_height, TINY.input_width)
    with torch.no_grad():
        *_, feats1, ages1 = model(images, feats, ages, torch.zeros(n), torch.ones(n))
        *_, feats2, ages2 = model(images, feats1, ages1, torch.full((n,), 0.05), torch.tensor([1.0, 0.0]))
    # camera 1 is stale: the repeated image never enters its history
    torch.testing.assert_close(feats2[1], feats1[1], atol=0, rtol=0)
    assert abs(float(ages2[1, 0]) - 0.05) < 1e-7 and float(ages2[1, 1]) == EMPTY_AGE   # aged, still empty
    # camera 0 is fresh: history shifted, newest slot age 0, previous frame now 0.05 s old
    torch.testing.assert_close(feats2[0, 1], feats1[0, 0], atol=0, rtol=0)
    assert ages2[0, 0] == 0.0 and abs(float(ages2[0, 1]) - 0.05) < 1e-7


def test_velocity_valid_follows_history_age():
    model = tiny_model()
    feats, ages = model.initial_state(1)
    img = torch.randn(1, 3, TINY.input_height, TINY.input_width)
    valid = []
    with torch.no_grad():
        for dt in (0.0, 0.05, 0.05, TINY.max_age_s + 0.01, 0.05):
            res = dict(zip(OUTPUT_NAMES, model(img, feats, ages, torch.tensor([dt]), torch.ones(1))))
            feats, ages = res["state_features_out"], res["state_ages_out"]
            valid.append(float(res["velocity_valid"][0]))
            if valid[-1] == 0.0:
                assert float(res["velocity"].abs().max()) == 0.0
    assert valid == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_history_older_than_max_age_is_ignored_like_a_reset():
    model = tiny_model()
    feats, ages = model.initial_state(1)
    a, b = (torch.randn(1, 3, TINY.input_height, TINY.input_width) for _ in range(2))
    with torch.no_grad():
        *_, feats, ages = model(a, feats, ages, torch.zeros(1), torch.ones(1))
        after_gap = model(b, feats, ages, torch.tensor([TINY.max_age_s + 0.1]), torch.ones(1))
        fresh_start = model(b, *model.initial_state(1), torch.zeros(1), torch.ones(1))
    for name, x, y in zip(OUTPUT_NAMES[:6], after_gap, fresh_start):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6, msg=name)


def test_cameras_are_independent_of_batch_composition():
    model = tiny_model()
    clip = torch.randn(3, 3, 3, TINY.input_height, TINY.input_width)
    dt, fresh = torch.full((3, 3), 0.05), torch.ones(3, 3)
    together = stream(model, clip, dt, fresh)
    alone = stream(model, clip[1:2], dt[1:2], fresh[1:2])
    for name in OUTPUT_NAMES[:6]:
        torch.testing.assert_close(together[-1][name][1:2], alone[-1][name], atol=1e-5, rtol=1e-5)


def test_initial_state_is_empty():
    feats, ages = tiny_model().initial_state(2)
    assert feats.shape == (2,) + TINY.state_shape and float(feats.abs().sum()) == 0.0
    assert torch.all(ages == EMPTY_AGE)


def test_engine_and_network_agree_on_empty_age():
    from perception.engine import base
    from perception.model import network
    assert base.EMPTY_AGE == network.EMPTY_AGE


def test_mac_count_of_a_known_layer():
    cfg = TINY
    model = tiny_model()
    total = count_macs(model)
    # the stem's first conv alone: output H/2 x W/2 x c1, 3x3x3 kernel
    c1 = cfg.backbone_channels[0]
    stem = (cfg.input_height // 2) * (cfg.input_width // 2) * c1 * 27
    assert total > stem
    assert count_macs(model, n=3) == 3 * total


def test_config_round_trip_and_validation():
    cfg = ModelConfig()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="window"):
        ModelConfig(window=1)
    with pytest.raises(ConfigError, match="input_width"):
        ModelConfig(input_width=450)
    with pytest.raises(ConfigError, match="unknown keys"):
        ModelConfig.from_dict({"widht": 3})


@functools.lru_cache(maxsize=None)
def exported_tiny() -> tuple[TemporalCenterNet, Path]:
    """The tiny model exported once per test process (export takes seconds); shared by the engine and
    contract tests. Returns the torch model and a read-only copy's path."""
    from perception.model.export import export_onnx

    model = tiny_model()
    root = Path(tempfile.mkdtemp(prefix="perception-test-model-"))
    atexit.register(shutil.rmtree, root, True)
    path = root / "tiny.onnx"
    export_onnx(model, path, "tiny")
    return model, path


@functools.lru_cache(maxsize=None)
def tiny_drive() -> Path:
    """A 2-camera, 2 s synthetic drive with ground truth (generated once per machine, cached)."""
    synth = pytest.importorskip("replay.synth")
    return synth.cached_drive(seed=3, seconds=2.0, fps=10.0, num_cameras=2, width=320, height=180,
                              scenario="mixed")


def test_giou_loss_matches_pycocotools_iou_and_the_enclosing_box_penalty():
    import numpy as np
    from pycocotools import mask as mask_utils

    from perception.model.losses import box_giou_loss

    rng = np.random.default_rng(3)
    offsets = torch.tensor(rng.uniform(-0.5, 0.5, (2, 2, 3, 5)), dtype=torch.float32)
    log_sizes = torch.tensor(rng.uniform(-1.0, 2.0, (2, 2, 3, 5)), dtype=torch.float32)
    mask = torch.zeros(1, 3, 5)
    mask[0, 1, 2] = 1.0
    pred = (offsets[:1], log_sizes[:1])
    target = (offsets[1:], log_sizes[1:])

    def xywh(offset, log_size):
        w, h = np.exp(log_size[0, :, 1, 2].numpy())
        x, y = offset[0, :, 1, 2].numpy()
        return [x - w / 2, y - h / 2, w, h]

    a, b = xywh(*pred), xywh(*target)
    iou = mask_utils.iou([a], [b], [0])[0, 0]
    enclosing = ((max(a[0] + a[2], b[0] + b[2]) - min(a[0], b[0])) * (max(a[1] + a[3], b[1] + b[3]) - min(a[1], b[1])))
    union = a[2] * a[3] + b[2] * b[3] - iou * (a[2] * a[3] + b[2] * b[3]) / (1 + iou)
    expected = 1 - (iou - (enclosing - union) / enclosing)
    assert float(box_giou_loss(*pred, *target, mask)) == pytest.approx(expected, rel=1e-5)
    assert float(box_giou_loss(*pred, *pred, mask)) == pytest.approx(0.0, abs=1e-6)
    # disjoint unit boxes two cells apart: IoU 0, enclosing 3 x 1, union 2 -> 1 - (0 - 1/3)
    zero = torch.zeros(1, 2, 1, 1)
    apart = torch.tensor([2.0, 0.0]).reshape(1, 2, 1, 1)
    assert float(box_giou_loss(zero, zero, apart, zero, torch.ones(1, 1, 1))) == pytest.approx(4 / 3)
    assert float(box_giou_loss(zero, zero, apart, zero, torch.zeros(1, 1, 1))) == 0.0   # nothing masked
