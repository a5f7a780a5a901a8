"""The compression chain on tiny networks: channel pruning keeps the contract (state, heads, input), the
pruned stream equals its whole-clip computation, export and checkpoints work, distillation learns."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from perception.errors import ConfigError  # noqa: E402
from perception.model.checkpoint import load_model, save_checkpoint  # noqa: E402
from perception.model.distill import Distiller, distillation_loss  # noqa: E402
from perception.model.network import OUTPUT_NAMES, count_macs, count_parameters  # noqa: E402
from perception.model.prune import PRUNED_KEY, interface_layers, prune_channels, pruning_record  # noqa: E402
from perception.model.train import clip_heads, train_step  # noqa: E402
from tests.test_model import TINY, assert_stream_equals_clip, tiny_drive, tiny_model  # noqa: E402
from tests.test_model_yolox import TINY as TINY_YOLOX  # noqa: E402

BACKBONES = pytest.mark.parametrize("cfg", [TINY, TINY_YOLOX], ids=["resnet", "yolox-nano"])


def convs(model) -> dict[str, torch.nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


@BACKBONES
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_channels_parameters_and_macs_drop_by_the_ratio(cfg, ratio):
    teacher = tiny_model(cfg=cfg)
    student = prune_channels(teacher, ratio)
    fixed = {n for n, m in convs(student).items() if m in interface_layers(student)}
    assert fixed and len(fixed) == 2
    for name, (before, after) in ((n, (convs(teacher)[n], m)) for n, m in convs(student).items()):
        kept = before.out_channels if name in fixed else int(before.out_channels * (1 - ratio))
        assert after.out_channels == kept, name
    # both sides of a convolution shrink: about (1 - ratio)^2 is left (the fixed layers add a little)
    left = (1 - ratio) ** 2
    assert left - 0.03 <= count_parameters(student) / count_parameters(teacher) <= left + 0.1
    assert left - 0.03 <= count_macs(student) / count_macs(teacher) <= left + 0.1
    assert count_parameters(tiny_model(cfg=cfg)) == count_parameters(teacher)   # the teacher is untouched


@BACKBONES
def test_interfaces_are_unchanged(cfg):
    teacher = tiny_model(cfg=cfg)
    student = prune_channels(teacher, 0.5)
    first = next(iter(convs(student).values()))
    assert first.in_channels == next(iter(convs(teacher).values())).in_channels      # the network input
    n = 2
    images = torch.randn(n, 3, cfg.input_height, cfg.input_width)
    with torch.no_grad():
        outs = [m(images, *m.initial_state(n), torch.zeros(n), torch.ones(n)) for m in (teacher, student)]
    for name, a, b in zip(OUTPUT_NAMES, *outs):
        assert a.shape == b.shape, name
    assert outs[1][-2].shape == (n,) + cfg.state_shape


@BACKBONES
def test_pruned_stream_equals_whole_clip(cfg):
    model = prune_channels(tiny_model(cfg=cfg), 0.5)
    torch.manual_seed(1)
    n, t = 2, 6
    clip = torch.randn(n, t, 3, cfg.input_height, cfg.input_width)
    dt = torch.full((n, t), 0.05)
    dt[1, 2] = 0.10                      # a dropped frame
    dt[0, 4] = 0.40                      # a gap longer than max_age_s
    fresh = torch.ones(n, t)
    fresh[1, 3] = 0.0                    # a stale camera
    streamed = assert_stream_equals_clip(model, clip, dt, fresh)
    assert streamed[-1]["velocity"].abs().max() > 1.0


@BACKBONES
def test_export_passes_the_contract_checks(cfg, tmp_path):
    from perception.contract import ModelExpectation, load_model as load_onnx
    from perception.model.export import export_onnx, max_parity_error, parity_inputs

    teacher = tiny_model(cfg=cfg)
    student = prune_channels(teacher, 0.3)
    path = tmp_path / "pruned.onnx"
    export_onnx(student, path, "pruned")
    images, t_ns = parity_inputs(cfg, 3)
    assert max(max_parity_error(student, path, images, t_ns).values()) <= 1e-4
    contract = load_onnx(path, ModelExpectation(classes=cfg.classes, input_width=cfg.input_width,
                                                input_height=cfg.input_height, window=cfg.window)).contract
    assert contract.state_shape == cfg.state_shape and contract.heads == cfg.contract("x", "").heads


def test_pruned_checkpoint_round_trip_and_bad_weights(tmp_path):
    teacher = tiny_model()
    student = prune_channels(teacher, 0.5)
    record = pruning_record(teacher, student, 0.5, "l2", None, "tiny.pt")
    assert record["parameters"] < record["parameters_before"] and record["macs"] < record["macs_before"]
    path = tmp_path / "pruned.pt"
    save_checkpoint(path, student, "tiny", **{PRUNED_KEY: record})
    loaded, payload = load_model(path)
    assert payload[PRUNED_KEY]["ratio"] == 0.5 and count_parameters(loaded) == count_parameters(student)
    images = torch.randn(1, 3, TINY.input_height, TINY.input_width)
    with torch.no_grad():
        a, b = (m(images, *m.initial_state(1), torch.zeros(1), torch.ones(1)) for m in (student, loaded))
    for name, x, y in zip(OUTPUT_NAMES, a, b):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)

    unmarked = tmp_path / "unmarked.pt"
    save_checkpoint(unmarked, student, "tiny")
    with pytest.raises(ConfigError, match="weights do not fit"):
        load_model(unmarked)
    state = student.state_dict()
    state["head_out.weight"], state["head_out.bias"] = state["head_out.weight"][:-1], state["head_out.bias"][:-1]
    bad = tmp_path / "bad.pt"
    torch.save({"format": "perception-checkpoint", "version": 1, "name": "x", "config": TINY.to_dict(),
                "model": state, PRUNED_KEY: record}, bad)
    with pytest.raises(ConfigError, match="bad.pt: outputs do not fit the contract: log_depth"):
        load_model(bad)
    with pytest.raises(ConfigError, match="ratio must be in"):
        prune_channels(teacher, 1.0)


def _batch(cfg=TINY) -> dict:
    import numpy as np

    from perception.model.dataset import Augmentation, ClipSampler, load_sequences

    sampler = ClipSampler(load_sequences(tiny_drive(), cfg), cfg, 3, Augmentation.none(), crop_width=64)
    return {k: torch.from_numpy(v) for k, v in asdict(sampler.batch(np.random.default_rng(0), 2)).items()}


def test_distillation_is_zero_for_the_teacher_itself():
    teacher = tiny_model()
    batch = _batch()
    with torch.no_grad():
        heads = clip_heads(teacher.forward_clip(batch["images"], batch["dt"], batch["fresh"]))
    terms = distillation_loss(heads, heads)
    assert all(float(v) == 0.0 for v in terms.values()), terms
    with torch.no_grad():
        other = clip_heads(tiny_model(seed=1).forward_clip(batch["images"], batch["dt"], batch["fresh"]))
    assert all(float(v) > 0.0 for v in distillation_loss(other, heads).values())


def test_distillation_loss_decreases_while_fine_tuning():
    torch.manual_seed(0)
    teacher = tiny_model()
    student = prune_channels(teacher, 0.5).train()
    batch = _batch()
    distiller = Distiller(teacher, alpha=0.8)
    params = list(student.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(15):
        terms = train_step(student, batch, optimizer, params, 10.0, loss_hook=distiller)
    assert len(distiller.history) == 15 and math.isfinite(terms["total"])
    assert {"heatmap", "kd_heatmap", "kd_displacement", "distill"} <= set(terms)
    assert terms["total"] == pytest.approx(0.2 * sum(terms[k] for k in ("heatmap", "offset", "size", "displacement",
                                                                           "depth")) + 0.8 * terms["distill"], rel=1e-5)
    assert sum(distiller.history[-3:]) / 3 < 0.7 * distiller.history[0]


@pytest.mark.slow
def test_cli_prune_fine_tune_export_then_quantize(tmp_path, capsys):
    from perception.cli import main
    from perception.contract import load_model as load_onnx

    teacher = tmp_path / "teacher.pt"
    save_checkpoint(teacher, tiny_model(), "tiny")
    drive = str(tiny_drive())
    run = tmp_path / "run"
    args = ["prune", str(teacher), "--ratio", "0.5", "--drives", drive, "--val-drives", drive, "--out", str(run),
            "--steps", "4", "--epochs", "2", "--batch-size", "2", "--clip-length", "3", "--crop-width", "64",
            "--val-frames", "2", "--workers", "0", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pruned 0.5 of the channels (l2)" in out and "fine-tuned 4 steps: distillation loss" in out
    summary = json.loads((run / "prune.json").read_text())
    assert summary["parity"] <= 1e-4 and summary["checkpoint"].endswith("best.pt")
    assert summary["pruned"]["parameters"] < 0.4 * summary["pruned"]["parameters_before"]
    assert load_onnx(run / "model.onnx").contract.model_id.startswith("tiny-pruned-")
    assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "again.onnx"), "--cameras", "2"]) == 0
    assert main(["quantize", str(run / "model.onnx"), "--drives", drive, "--samples", "4", "--target", "cpu",
                 "--out", str(tmp_path / "int8.onnx")]) == 0
    assert load_onnx(tmp_path / "int8.onnx").contract.state_shape == TINY.state_shape
    capsys.readouterr()
    assert main(args[:3] + ["1.5"] + args[4:]) == 2
    assert "ratio must be in (0, 1)" in capsys.readouterr().err
