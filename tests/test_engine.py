"""Engines: ONNX Runtime vs torch parity on real footage, state handling, contract checks on load."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from calib.camera import CameraModel  # noqa: E402
from calib.remap import build_remap  # noqa: E402
from perception.contract import ModelExpectation  # noqa: E402
from perception.engine.base import EMPTY_AGE, NO_TIME, EngineInputError  # noqa: E402
from perception.engine.onnxruntime import OnnxRuntimeEngine  # noqa: E402
from perception.engine.torch import TorchEngine  # noqa: E402
from perception.errors import ModelContractError  # noqa: E402
from perception.frame import Frame  # noqa: E402
from perception.preprocess import FastPreprocessor, Normalization  # noqa: E402
from tests.test_model import TINY, exported_tiny  # noqa: E402

MS = 1_000_000


@pytest.fixture(scope="module")
def tiny():
    return exported_tiny()


def real_batches(shared_data, steps: int, cameras: int) -> np.ndarray:
    """[steps, cameras, 3, H, W]: consecutive frames of real footage, each camera a different crop,
    preprocessed like the node (remap table + FastPreprocessor)."""
    import cv2

    cap = cv2.VideoCapture(str(shared_data / "opencv-samples" / "vtest.avi"))
    frames = []
    for _ in range(steps):
        ok, image = cap.read()
        assert ok, "could not decode vtest.avi"
        frames.append(image)
    cap.release()
    w, h = 384, 288
    cams = [CameraModel(f"cam{i}", w, h, 300.0, 300.0, (w - 1) / 2, (h - 1) / 2, "plumb_bob",
                        (-0.1 * i, 0.01, 0.0, 0.0, 0.0)) for i in range(cameras)]
    pre = FastPreprocessor([build_remap(c, TINY.input_width, TINY.input_height) for c in cams],
                           Normalization(TINY.mean, TINY.std))
    crops = [(0, 0), (384, 0), (192, 288)]
    out = []
    for image in frames:
        batch = [Frame.from_bgr(image[y:y + h, x:x + w]) for x, y in crops[:cameras]]
        out.append(pre.run(batch).copy())
    return np.stack(out)


def test_onnxruntime_matches_torch_on_real_footage(tiny, shared_data):
    model, path = tiny
    images = real_batches(shared_data, steps=4, cameras=3)
    torch_engine, ort_engine = TorchEngine(model), OnnxRuntimeEngine(path, threads=1)
    states = [torch_engine.initial_state(3), ort_engine.initial_state(3)]
    t = 0
    for step in range(images.shape[0]):
        t += 100 * MS if step != 2 else 200 * MS       # one dropped frame
        fresh = np.array([True, step != 1, True])        # camera 1 stale once
        (h_t, states[0]), (h_o, states[1]) = (
            e.run(images[step], np.full(3, t), s, fresh) for e, s in zip((torch_engine, ort_engine), states))
        for name, ref in h_t.as_dict().items():
            got = h_o.as_dict()[name]
            assert got.shape == ref.shape and got.dtype == np.float32
            err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
            assert err.max() <= 1e-4, f"{name} step {step}: {err.max()}"
        np.testing.assert_allclose(states[1].features, states[0].features, atol=1e-4)
        np.testing.assert_array_equal(states[1].ages, states[0].ages)
    assert np.abs(h_t.velocity).max() > 0.1


def test_io_binding_gives_identical_results(tiny):
    _, path = tiny
    rng = np.random.default_rng(0)
    plain, bound = OnnxRuntimeEngine(path, threads=1), OnnxRuntimeEngine(path, threads=1, io_binding=True)
    s1, s2 = plain.initial_state(2), bound.initial_state(2)
    for step in range(3):
        images = rng.standard_normal((2, 3, 64, 96), dtype=np.float32)
        (h1, s1), (h2, s2) = plain.run(images, np.full(2, step * 50 * MS), s1), bound.run(images, np.full(2, step * 50 * MS), s2)
        for k, v in h1.as_dict().items():
            np.testing.assert_array_equal(h2.as_dict()[k], v)
        np.testing.assert_array_equal(s2.features, s1.features)


def test_time_steps_come_from_timestamps(tiny):
    _, path = tiny
    engine = OnnxRuntimeEngine(path, threads=1)
    state = engine.initial_state(2)
    assert np.all(state.t_ns == NO_TIME) and np.all(state.ages == EMPTY_AGE)
    images = np.zeros((2, 3, 64, 96), np.float32)
    heads, state = engine.run(images, np.array([1000 * MS, 2000 * MS]), state)
    assert list(heads.velocity_valid) == [0.0, 0.0]              # first frame: no history
    heads, state = engine.run(images, np.array([1050 * MS, 2100 * MS]), state, np.array([True, False]))
    np.testing.assert_allclose(state.ages[:, 0], [0.0, 0.1], atol=1e-6)   # stale camera 1 only aged
    assert list(heads.velocity_valid) == [1.0, 1.0]
    with pytest.raises(EngineInputError, match="camera 0: time went backwards"):
        engine.run(images, np.array([1000 * MS, 2200 * MS]), state)
    state = state.reset([0])
    heads, state = engine.run(images, np.array([1000 * MS, 2200 * MS]), state)
    assert list(heads.velocity_valid) == [0.0, 1.0]


def test_bad_inputs_are_named(tiny):
    _, path = tiny
    engine = OnnxRuntimeEngine(path, threads=1)
    state = engine.initial_state(2)
    with pytest.raises(EngineInputError, match=r"images must be float32 \[2, 3, 64, 96\]"):
        engine.run(np.zeros((2, 3, 64, 95), np.float32), np.zeros(2), state)
    with pytest.raises(EngineInputError, match="images must be float32"):
        engine.run(np.zeros((2, 3, 64, 96), np.float64), np.zeros(2), state)
    with pytest.raises(EngineInputError, match="t_ns must have one entry per camera"):
        engine.run(np.zeros((2, 3, 64, 96), np.float32), np.zeros(3), state)
    with pytest.raises(EngineInputError, match="at least one camera"):
        engine.initial_state(0)
    with pytest.raises(EngineInputError, match="none of the execution providers"):
        OnnxRuntimeEngine(path, providers=["NoSuchExecutionProvider"])


def test_engines_check_the_configuration(tiny):
    model, path = tiny
    wrong = ModelExpectation(input_width=448)
    with pytest.raises(ModelContractError, match="input_width: model has 96, configuration expects 448"):
        OnnxRuntimeEngine(path, wrong)
    with pytest.raises(ModelContractError, match="input_width"):
        TorchEngine(model, wrong)
    engine = OnnxRuntimeEngine(path, ModelExpectation(classes=TINY.classes, input_width=96, input_height=64))
    assert engine.name == "onnxruntime[CPU]" and engine.precision == "fp32"


def test_torch_engine_loads_a_checkpoint(tmp_path, tiny):
    from perception.model.checkpoint import save_checkpoint
    model, _ = tiny
    save_checkpoint(tmp_path / "c.pt", model, "tiny")
    engine = TorchEngine(tmp_path / "c.pt")
    images = np.random.default_rng(1).standard_normal((1, 3, 64, 96), dtype=np.float32)
    a, _ = engine.run(images, np.zeros(1), engine.initial_state(1))
    b, _ = TorchEngine(model).run(images, np.zeros(1), engine.initial_state(1))
    np.testing.assert_array_equal(a.heatmap, b.heatmap)


@pytest.mark.gpu
def test_cuda_execution_provider_matches_cpu(tiny):
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)")
    _, path = tiny
    images = np.random.default_rng(2).standard_normal((3, 3, 64, 96), dtype=np.float32)
    cpu = OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"])
    gpu = OnnxRuntimeEngine(path, providers=["CUDAExecutionProvider"], io_binding=True)
    assert gpu.name == "onnxruntime[CUDA]"
    a, _ = cpu.run(images, np.zeros(3), cpu.initial_state(3))
    b, _ = gpu.run(images, np.zeros(3), gpu.initial_state(3))
    np.testing.assert_allclose(b.heatmap, a.heatmap, atol=1e-3)


def _exported_parity(torch_engine: TorchEngine, path) -> dict[str, float]:
    from perception.model.export import max_parity_error, parity_inputs

    images, t_ns = parity_inputs(torch_engine.model.cfg, 2)
    return max_parity_error(torch_engine, path, images, t_ns)


def test_torch_engine_runs_an_exported_model_like_onnxruntime(tiny, tmp_path):
    """Rebuilt from the file alone (architecture metadata + the graph's folded convolutions), the network
    computes what ONNX Runtime computes, for a plain and a pruned network."""
    from perception.model.export import export_onnx
    from perception.model.prune import prune_channels

    model, path = tiny
    engine = TorchEngine(path)
    assert engine.contract.model_id == OnnxRuntimeEngine(path).contract.model_id
    assert max(_exported_parity(engine, path).values()) <= 1e-4
    pruned = prune_channels(model, 0.5)
    pruned_path = tmp_path / "pruned.onnx"
    export_onnx(pruned, pruned_path, "pruned")
    assert max(_exported_parity(TorchEngine(pruned_path), pruned_path).values()) <= 1e-4


def test_torch_engine_refuses_an_export_without_its_architecture(tiny, tmp_path):
    import onnx

    _, path = tiny
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key != "perception.model_config"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelContractError, match=r"bare\.onnx: no 'perception.model_config' metadata"):
        TorchEngine(bare)


@pytest.mark.gpu
def test_torch_engine_on_cuda_matches_onnxruntime_on_the_cpu(tiny):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    _, path = tiny
    engine = TorchEngine(path, device="cuda")
    assert engine.name == "torch[cuda]"
    errors = _exported_parity(engine, path)
    assert max(errors.values()) <= 1e-3, errors   # TF32 / cuDNN convolutions, not bit-exact with the CPU
