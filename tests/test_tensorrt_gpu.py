"""TensorRT engine on a real GPU: build, cache, parity with ONNX Runtime, device state, CUDA graphs.

Skipped without an NVIDIA GPU (conftest) or without TensorRT / pycuda; tools/trt_validate.py runs the
same checks on a full-size model with timings.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
pytest.importorskip("tensorrt", reason="needs TensorRT (pip install perception[gpu])")
pytest.importorskip("pycuda.driver", reason="needs pycuda")
pytest.importorskip("torch")

from perception.engine.onnxruntime import OnnxRuntimeEngine  # noqa: E402
from perception.engine.tensorrt import TensorRTEngine  # noqa: E402
from perception.engine.trt_cache import CameraProfile, DeviceState, EngineBuildError  # noqa: E402
from tests.test_model import exported_tiny  # noqa: E402

MS = 1_000_000
FP32_TOLERANCE = 2e-2   # relative, TF32 convolutions are TensorRT's default for float32 on Ampere and later


def stream(engine, steps=5, cameras=2, seed=0):
    rng = np.random.default_rng(seed)
    state = engine.initial_state(cameras)
    out = []
    for k in range(steps):
        images = rng.standard_normal((cameras, 3, 64, 96), dtype=np.float32)
        fresh = np.array([True, k != 2])
        heads, state = engine.run(images, np.full(cameras, (k + 1) * 100 * MS), state, fresh)
        out.append((heads.as_dict(), np.asarray(state.features), state.ages.copy()))
    return out


def test_engine_matches_onnxruntime_and_keeps_state_on_the_device(tmp_path):
    _, path = exported_tiny()
    trt_engine = TensorRTEngine(path, profile=CameraProfile(1, 2, 4), cache_dir=tmp_path)
    assert trt_engine.built and trt_engine.precision == "fp32"
    state = trt_engine.initial_state(2)
    _, state = trt_engine.run(np.zeros((2, 3, 64, 96), np.float32), np.full(2, MS), state)
    assert isinstance(state.features, DeviceState)
    ref = stream(OnnxRuntimeEngine(path, threads=1))
    got = stream(TensorRTEngine(path, profile=CameraProfile(1, 2, 4), cache_dir=tmp_path))
    for (rh, rf, ra), (gh, gf, ga) in zip(ref, got):
        for name, value in rh.items():
            err = np.abs(gh[name] - value) / np.maximum(1.0, np.abs(value))
            assert err.max() <= FP32_TOLERANCE, name
        np.testing.assert_allclose(gf, rf, atol=FP32_TOLERANCE)
        np.testing.assert_array_equal(ga, ra)


def test_cached_plan_is_reused_and_a_corrupt_one_rebuilt(tmp_path):
    _, path = exported_tiny()
    first = TensorRTEngine(path, profile=CameraProfile(1, 2, 2), cache_dir=tmp_path)
    second = TensorRTEngine(path, profile=CameraProfile(1, 2, 2), cache_dir=tmp_path, allow_build=False)
    assert first.built and not second.built and second.plan_path == first.plan_path
    first.plan_path.write_bytes(b"\0" * first.plan_path.stat().st_size)
    with pytest.raises(EngineBuildError, match="--no-build"):
        TensorRTEngine(path, profile=CameraProfile(1, 2, 2), cache_dir=tmp_path, allow_build=False)
    assert TensorRTEngine(path, profile=CameraProfile(1, 2, 2), cache_dir=tmp_path).built
    assert any(tmp_path.glob("timing-*.cache"))


def test_cuda_graph_replay_equals_plain_enqueue(tmp_path):
    pytest.importorskip("cuda.bindings", reason="CUDA graphs need cuda-python")
    _, path = exported_tiny()
    plain = stream(TensorRTEngine(path, profile=CameraProfile(1, 2, 4), cache_dir=tmp_path), steps=6)
    graph = stream(TensorRTEngine(path, profile=CameraProfile(1, 2, 4), cache_dir=tmp_path, cuda_graph=True), steps=6)
    for (ph, pf, _), (gh, gf, _) in zip(plain, graph):
        for name, value in ph.items():
            np.testing.assert_array_equal(gh[name], value)
        np.testing.assert_array_equal(gf, pf)
