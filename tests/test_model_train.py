"""Training on a tiny synthetic drive: checkpoints, log, exact resume, transfer learning, CLI end to end."""

from __future__ import annotations

import csv
from pathlib import Path
import pickle

import pytest

torch = pytest.importorskip("torch")

from perception.errors import ConfigError  # noqa: E402
from perception.model import train as train_module  # noqa: E402
from perception.model.checkpoint import read_checkpoint  # noqa: E402
from perception.model.dataset import Augmentation  # noqa: E402
from perception.model.network import TemporalCenterNet  # noqa: E402
from perception.model.train import TrainConfig, lr_factor, train  # noqa: E402
from tests.test_model import TINY, tiny_drive  # noqa: E402


def config(out, **kw) -> TrainConfig:
    drive = str(tiny_drive())
    base = dict(drives=(drive,), val_drives=(drive,), out=str(out), name="tiny", model=TINY, epochs=2,
                steps_per_epoch=2, batch_size=2, clip_length=3, crop_width=64, warmup_steps=1, val_frames=3,
                workers=0, threads=1, augmentation=Augmentation(drop_p=0.3, stale_p=0.2))
    base.update(kw)
    return TrainConfig(**base)


def test_training_writes_checkpoints_and_log(tmp_path):
    best = train(config(tmp_path), progress=False)
    assert {"mAP@0.5", "AP@0.5/car", "range_rel_error_median_under_40m"} <= set(best)
    with (tmp_path / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(float(r["loss"]) > 0 for r in rows)
    last = read_checkpoint(tmp_path / "last.pt")
    assert last["epoch"] == 2 and last["config"] == TINY.to_dict() and "optimizer" in last
    assert read_checkpoint(tmp_path / "best.pt")["train_config"]["name"] == "tiny"


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_continues_exactly(tmp_path, monkeypatch, ema_decay):
    train(config(tmp_path / "full", ema_decay=ema_decay), progress=False)
    calls = []
    real_evaluate = train_module.evaluate

    def interrupted(*a, **kw):       # Ctrl-C during the second epoch's validation
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **kw)

    monkeypatch.setattr(train_module, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "cut", ema_decay=ema_decay), progress=False)
    monkeypatch.setattr(train_module, "evaluate", real_evaluate)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    train(config(tmp_path / "cut", ema_decay=ema_decay), resume=True, progress=False)
    full, resumed = (read_checkpoint(tmp_path / d / "last.pt") for d in ("full", "cut"))
    for part in ("model", "ema") if ema_decay else ("model",):
        for k in full[part]:
            torch.testing.assert_close(resumed[part][k], full[part][k], atol=0, rtol=0, msg=f"{part} {k}")
    with (tmp_path / "cut" / "log.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_weight_average_follows_the_ramped_decay():
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = train_module.weight_average(net, decay=0.9)
    ema.update_parameters(net)                                   # the first update copies
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 7
    ema.update_parameters(net)
    d = min(0.9, 2 / 11)                                         # after one update
    torch.testing.assert_close(ema.module[0].weight, before * d + net[0].weight.detach() * (1 - d))
    assert int(ema.module[1].num_batches_tracked) == 7             # integer buffers are copied


def test_ema_checkpoint_keeps_the_averaged_weights_and_the_giou_term_is_logged(tmp_path):
    train(config(tmp_path, ema_decay=0.999, iou_loss_weight=1.0, epochs=1), progress=False)
    best, last = read_checkpoint(tmp_path / "best.pt"), read_checkpoint(tmp_path / "last.pt")
    averaged = {k[len("module."):]: v for k, v in last["ema"].items() if k.startswith("module.")}
    assert averaged.keys() == best["model"].keys()
    for k in best["model"]:
        torch.testing.assert_close(best["model"][k], averaged[k], atol=0, rtol=0, msg=k)
    assert not torch.equal(best["model"]["head_out.weight"], last["model"]["head_out.weight"])
    with (tmp_path / "log.csv").open() as f:
        assert float(next(csv.DictReader(f))["box_iou"]) > 0
    with pytest.raises(ConfigError, match="ema_decay must be in"):
        config(tmp_path, ema_decay=1.0)


def test_init_backbone_and_freeze(tmp_path):
    train(config(tmp_path / "a", epochs=1), progress=False)
    train(config(tmp_path / "b", epochs=1, init=str(tmp_path / "a" / "best.pt"), init_part="backbone",
                 freeze="backbone", seed=5), progress=False)
    a, b = (read_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("a", "b"))
    for k in a:
        if k.startswith("backbone."):
            torch.testing.assert_close(b[k], a[k], atol=0, rtol=0, msg=k)   # copied, then frozen
    assert not torch.equal(a["head_out.weight"], b["head_out.weight"])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_and_init_errors(tmp_path):
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(config(tmp_path), resume=True, progress=False)
    with pytest.raises(ConfigError, match="no validation drives"):
        config(tmp_path, val_drives=())
    bad = tmp_path / "evil.pt"
    with bad.open("wb") as f:
        pickle.dump({"format": "perception-checkpoint", "payload": print}, f)   # would run code on unpickle
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        read_checkpoint(bad)


def test_learning_rate_schedule():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


@pytest.mark.slow
def test_cli_train_then_export(tmp_path, capsys):
    import yaml

    from perception.cli import main
    from perception.contract import ModelExpectation, load_model

    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text(yaml.safe_dump({k: v for k, v in TINY.to_dict().items() if k != "classes"}))
    drive = str(tiny_drive())
    run = tmp_path / "run"
    assert main(["train", "--drives", drive, "--val-drives", drive, "--out", str(run), "--name", "cli",
                 "--model-config", str(model_yaml), "--epochs", "1", "--steps-per-epoch", "2",
                 "--batch-size", "2", "--clip-length", "3", "--crop-width", "64", "--val-frames", "2",
                 "--workers", "0", "--quiet"]) == 0
    assert (run / "best.pt").exists() and (run / "config.json").exists()
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(run / "best.pt"), "--out", str(onnx_path), "--check-drive", drive,
                 "--cameras", "2"]) == 0
    out = capsys.readouterr().out
    assert "parity torch vs onnxruntime over 4 steps x 2 cameras (drive frames)" in out
    contract = load_model(onnx_path, ModelExpectation(classes=TINY.classes, input_width=96, input_height=64)).contract
    assert contract.model_id.startswith("cli-")
    assert main(["export", str(tmp_path / "missing.pt"), "--out", str(onnx_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_teacher_early_freeze_and_backbone_learning_rate(tmp_path):
    from tests.test_model_yolox import TINY as TINY_YOLOX

    cfg = config(tmp_path, model=TINY_YOLOX, epochs=1, freeze="teacher-early", backbone_lr_scale=0.1)
    train(cfg, progress=False)
    end = read_checkpoint(tmp_path / "last.pt")
    trained = end["model"]
    early = ("backbone.stem.", "backbone.dark2.", "backbone.dark3.")
    torch.manual_seed(cfg.seed)
    fresh = TemporalCenterNet(cfg.model).state_dict()   # train() starts from this seed's weights
    moved = {k for k in trained if not torch.equal(trained[k], fresh[k])}
    assert moved and not any(k.startswith(early) for k in moved)          # early teacher stages fixed
    assert any(k.startswith("backbone.dark4.") for k in moved)           # deeper stages learn
    groups = end["optimizer"]["param_groups"]
    assert [g["initial_lr"] for g in groups] == pytest.approx([cfg.lr, cfg.lr * 0.1])
    with pytest.raises(ConfigError, match="backbone_lr_scale"):
        config(tmp_path, backbone_lr_scale=0)
    with pytest.raises(ConfigError, match="need the 'yolox-nano' backbone"):
        config(tmp_path, freeze="teacher-early")


def test_parity_measures_the_velocity_head_in_cells(tmp_path):
    from perception.model.export import export_onnx, max_parity_error, parity_inputs
    from tests.test_model import tiny_model

    model = tiny_model().eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, "tiny")
    images, t_ns = parity_inputs(model.cfg, 2)
    assert max(max_parity_error(model, path, images, t_ns).values()) <= 1e-4
    n_cls = len(model.cfg.classes)
    with torch.no_grad():
        model.head_out.bias[n_cls + 4] += 1e-3       # the torch side now regresses 1e-3 cells more
    errors = max_parity_error(model, path, images, t_ns)
    # measured as displacement (relative to max(1, |cells|)): at most the 1e-3 added, never 80x it as in px/s
    assert 1e-4 < errors["velocity"] <= 1.01e-3
    assert errors["heatmap"] <= 1e-4


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo to cross-check")
def test_native_bf16_agrees_with_the_cpu_flags():
    """`perception train --bf16` warns where bfloat16 is emulated: the check must say what the kernel says."""
    from perception.commands.train import native_bf16

    flags = set(Path("/proc/cpuinfo").read_text().split())
    assert native_bf16() == bool(flags & {"avx512_bf16", "amx_tile"})
