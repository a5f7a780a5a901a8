"""The plain-Python parts of the TensorRT engine: cache keys and invalidation, I/O contract checks, device
state rotation, CUDA-graph keys, ONNX Runtime GPU provider options. No TensorRT needed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from perception.contract import ModelContract
from perception.engine.base import EMPTY_AGE, NO_TIME, EngineInputError, EngineState
from perception.engine.trt_cache import (
    BuildSettings,
    CameraProfile,
    DeviceState,
    EngineBuildError,
    EngineCache,
    EngineKey,
    Platform,
    StateRing,
    TensorSpec,
    camera_profile_from_arg,
    check_engine_io,
    graph_key,
    host_outputs,
    io_shapes,
    obtain_plan,
    ort_gpu_providers,
)
from perception.errors import ConfigError, ModelContractError
from perception.model.config import ModelConfig

CONTRACT: ModelContract = ModelConfig(input_height=64, input_width=96, window=3, feature_channels=8).contract("m-1", "ab" * 32)
ORIN = Platform("10.3.0", "Orin (nvgpu)", (8, 7))


def key(**changes) -> EngineKey:
    base = EngineKey("m-1", "11" * 32, ORIN, BuildSettings("int8", CameraProfile(1, 3, 6)))
    return dataclasses.replace(base, **changes)


class Builds:
    """Counts builds; a 'plan' here is just bytes that `deserialize` accepts when they start with PLAN."""

    def __init__(self) -> None:
        self.count = 0

    def build(self) -> bytes:
        self.count += 1
        return b"PLAN" + bytes([self.count])

    @staticmethod
    def deserialize(plan: bytes):
        return plan if plan.startswith(b"PLAN") else None


def test_key_digest_changes_with_every_field_and_names_files_readably():
    k = key()
    variants = [key(onnx_sha256="22" * 32), key(platform=Platform("10.4.0", "Orin (nvgpu)", (8, 7))),
                key(platform=Platform("10.3.0", "NVIDIA H100", (9, 0))),
                key(settings=BuildSettings("fp16", CameraProfile(1, 3, 6))),
                key(settings=BuildSettings("int8", CameraProfile(1, 3, 4))),
                key(settings=BuildSettings("int8", CameraProfile(1, 3, 6), optimization_level=5))]
    assert len({k.digest} | {v.digest for v in variants}) == 1 + len(variants)
    assert k.digest == key().digest
    assert k.file_stem.startswith("m-1.int8.") and ORIN.tag == "10.3.0-orin-nvgpu-sm87"
    assert "settings.precision: wanted 'fp16', plan has 'int8'" in key(
        settings=BuildSettings("fp16", CameraProfile(1, 3, 6))).differences(k.to_dict())


def test_cache_round_trip_and_every_kind_of_miss(tmp_path):
    cache = EngineCache(tmp_path)
    k, builds = key(), Builds()
    assert "no engine built yet" in cache.lookup(k).reason
    engine, built = obtain_plan(cache, k, builds.build, builds.deserialize)
    assert (engine, built, builds.count) == (b"PLAN\x01", True, 1)
    engine, built = obtain_plan(cache, k, builds.build, builds.deserialize)
    assert (engine, built, builds.count) == (b"PLAN\x01", False, 1)          # cached: no rebuild

    plan = cache.plan_path(k)
    plan.write_bytes(b"PLAN\x09")                                           # same size, other bytes
    assert "sha256 differs" in cache.lookup(k).reason
    plan.write_bytes(b"PLAN")
    assert "corrupt plan (size 4" in cache.lookup(k).reason
    plan.with_suffix(".json").write_text("{not json")
    assert "corrupt sidecar" in cache.lookup(k).reason
    plan.with_suffix(".json").unlink()
    assert "cannot read the plan's sidecar" in cache.lookup(k).reason
    engine, built = obtain_plan(cache, k, builds.build, builds.deserialize)   # rebuilt over the damage
    assert built and builds.count == 2 and cache.lookup(k).plan == b"PLAN\x02"


def test_a_plan_for_another_configuration_is_not_used(tmp_path):
    cache, builds = EngineCache(tmp_path), Builds()
    explicit = tmp_path / "vehicle.plan"
    obtain_plan(cache, key(), builds.build, builds.deserialize, plan_path=explicit)
    newer_trt = key(platform=Platform("10.4.0", "Orin (nvgpu)", (8, 7)))
    found = cache.lookup(newer_trt, explicit)
    assert found.plan is None and "platform.trt_version: wanted '10.4.0', plan has '10.3.0'" in found.reason
    with pytest.raises(EngineBuildError, match=r"m-1: vehicle.plan was built for another configuration.*--no-build"):
        obtain_plan(cache, newer_trt, builds.build, builds.deserialize, plan_path=explicit, allow_build=False)
    assert builds.count == 1
    lines = []
    _, built = obtain_plan(cache, newer_trt, builds.build, builds.deserialize, plan_path=explicit, progress=lines.append)
    assert built and "building TensorRT engine for m-1 (int8)" in lines[0]
    assert json.loads(explicit.with_suffix(".json").read_text())["key"]["platform"]["trt_version"] == "10.4.0"


def test_a_plan_tensorrt_cannot_deserialize_is_rebuilt_once(tmp_path):
    cache, builds = EngineCache(tmp_path), Builds()
    cache.store(key(), b"GARBAGE")            # intact file, but not an engine this TensorRT can load
    engine, built = obtain_plan(cache, key(), builds.build, builds.deserialize)
    assert built and engine == b"PLAN\x01"
    cache.store(key(), b"GARBAGE")
    with pytest.raises(EngineBuildError, match="could not deserialize it.*--no-build"):
        obtain_plan(cache, key(), builds.build, builds.deserialize, allow_build=False)
    with pytest.raises(EngineBuildError, match="could not deserialize the plan it just built"):
        obtain_plan(cache, key(), lambda: b"BAD", builds.deserialize)


def test_timing_cache_is_per_platform(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.read_timing_cache(ORIN) == b""
    cache.write_timing_cache(ORIN, b"tactics")
    assert cache.read_timing_cache(ORIN) == b"tactics"
    assert cache.read_timing_cache(Platform("10.3.0", "NVIDIA H100", (9, 0))) == b""


def engine_specs() -> list[TensorSpec]:
    ins, outs = CONTRACT.expected_io()
    return ([TensorSpec(n, True, "float32", tuple(-1 if d is None else d for d in s)) for n, s in ins.items()]
            + [TensorSpec(n, False, "float32", tuple(-1 if d is None else d for d in s)) for n, s in outs.items()])


def test_engine_io_check_accepts_the_contract_and_names_each_difference():
    check_engine_io(engine_specs(), CONTRACT, "m.plan")
    specs = engine_specs()
    specs[0] = dataclasses.replace(specs[0], dtype="float16")                       # images
    specs[1] = dataclasses.replace(specs[1], shape=(2,) + specs[1].shape[1:])       # state_features fixed batch
    specs = [s for s in specs if s.name != "velocity_valid"] + [TensorSpec("debug", False, "float32", (-1,))]
    with pytest.raises(ModelContractError) as e:
        check_engine_io(specs, CONTRACT, "m.plan")
    msg = str(e.value)
    assert msg.startswith("m.plan: engine does not match the model contract")
    assert "input 'images' is float16" in msg and "input 'state_features' has shape [2, 2, 8, 8, 12]" in msg
    assert "missing output 'velocity_valid'" in msg and "unexpected tensors ['debug']" in msg


def test_buffer_shapes_and_what_comes_back_to_the_host():
    ins, outs = io_shapes(CONTRACT, 3)
    assert ins["images"] == (3, 3, 64, 96) and ins["state_features"] == (3, 2, 8, 8, 12) and ins["dt"] == (3,)
    assert outs["heatmap"] == (3, 4, 8, 12) and outs["state_ages_out"] == (3, 2)
    back = host_outputs(CONTRACT)
    assert "state_features_out" not in back and {"heatmap", "velocity_valid", "state_ages_out"} <= set(back)


class DeviceMemory:
    """The two state buffers as host arrays, written the way the engine's step writes them."""

    def __init__(self, shape) -> None:
        self.buffers = [np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)]

    def step(self, ring: StateRing, features, new_value: float) -> DeviceState:
        plan = ring.plan(features)
        if plan.upload is not None:
            self.buffers[plan.read][...] = plan.upload
        self.buffers[plan.read][list(plan.zero_cameras)] = 0.0
        read = self.buffers[plan.read].copy()
        self.buffers[plan.write][...] = read + new_value     # "the network": new state from the old one
        return ring.commit(plan)


def test_state_stays_on_the_device_and_alternates_buffers():
    shape = (2, 2, 8, 8, 12)
    memory = DeviceMemory(shape)
    ring = StateRing(shape, lambda i: memory.buffers[i])
    first = ring.plan(np.zeros(shape, np.float32))
    assert first.upload is not None and (first.read, first.write) == (0, 1)
    h1 = memory.step(ring, np.zeros(shape, np.float32), 1.0)
    p2 = ring.plan(h1)
    assert p2.upload is None and (p2.read, p2.write) == (1, 0) and p2.zero_cameras == ()
    h2 = memory.step(ring, h1, 1.0)
    np.testing.assert_array_equal(np.asarray(h2), np.full(shape, 2.0))
    assert h2.shape == shape and h2.dtype == np.float32
    with pytest.raises(EngineInputError, match="stale device state"):
        ring.plan(h1)                                   # its buffer was overwritten by step 2
    other = StateRing(shape, lambda i: memory.buffers[i])
    with pytest.raises(EngineInputError, match="belongs to another engine"):
        other.plan(h2)
    with pytest.raises(EngineInputError, match=r"state_features must be float32 \[2, 2, 8, 8, 12\]"):
        ring.plan(np.zeros((3,) + shape[1:], np.float32))


def test_engine_state_reset_works_on_a_device_state():
    shape = (3, 2, 8, 8, 12)
    memory = DeviceMemory(shape)
    ring = StateRing(shape, lambda i: memory.buffers[i])
    handle = memory.step(ring, np.zeros(shape, np.float32), 5.0)
    state = EngineState(handle, np.zeros((3, 2), np.float32), np.array([10, 20, 30], np.int64))
    reset = state.reset([1])                            # exactly what the node calls on a time jump
    assert reset.t_ns[1] == NO_TIME and reset.ages[1, 0] == EMPTY_AGE and reset.t_ns[0] == 10
    assert reset.features.zeroed == {1} and state.features.zeroed == frozenset()   # input not mutated
    seen = np.asarray(reset.features)
    assert not seen[1].any() and (seen[[0, 2]] == 5.0).all()
    plan = ring.plan(reset.features)
    assert plan.zero_cameras == (1,) and plan.upload is None
    after = memory.step(ring, reset.features, 1.0)
    got = np.asarray(after)
    assert (got[1] == 1.0).all() and (got[[0, 2]] == 6.0).all()
    everything = EngineState(after, np.zeros((3, 2), np.float32), np.zeros(3, np.int64)).reset()
    assert everything.features.zeroed == {0, 1, 2}
    with pytest.raises(EngineInputError, match="can only be reset"):
        after.copy()[0] = 1.0


def test_cuda_graph_keys_follow_the_buffer_roles():
    shape = (2, 2, 8, 8, 12)
    memory = DeviceMemory(shape)
    ring = StateRing(shape, lambda i: memory.buffers[i])
    h = memory.step(ring, np.zeros(shape, np.float32), 0.0)
    keys = set()
    for _ in range(6):
        keys.add(graph_key(2, ring.plan(h), 0xABC))
        h = memory.step(ring, h, 0.0)
    assert len(keys) == 2                                   # one graph per parity, replayed from then on
    assert graph_key(2, ring.plan(h), 0xDEF) not in keys    # another image buffer needs its own graph


def test_camera_profile_parsing_and_limits():
    assert camera_profile_from_arg("3") == CameraProfile(3, 3, 3)
    assert camera_profile_from_arg("1:3:6") == CameraProfile(1, 3, 6)
    for bad in ("0", "4:3:6", "1:3", "a:b:c"):
        with pytest.raises(ConfigError):
            camera_profile_from_arg(bad)
    with pytest.raises(EngineInputError, match=r"7 cameras is outside the engine's profile \[1, 6\]"):
        CameraProfile(1, 3, 6).check(7, "tensorrt")
    shapes = CameraProfile(1, 3, 6).shapes(CONTRACT)
    assert shapes["images"] == ((1, 3, 64, 96), (3, 3, 64, 96), (6, 3, 64, 96))
    with pytest.raises(ConfigError, match="optimization_level"):
        BuildSettings("fp32", optimization_level=7)


def test_onnxruntime_gpu_provider_options(tmp_path):
    import onnxruntime as ort

    providers = ort_gpu_providers(CONTRACT, tmp_path, profile=CameraProfile(1, 2, 4), cuda_graph=True)
    names = [p[0] for p in providers]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = providers[0][1]
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path / "ort-trt")
    assert trt["trt_profile_min_shapes"].startswith("images:1x3x64x96,state_features:1x2x8x8x12,")
    assert "dt:4" in trt["trt_profile_max_shapes"] and trt["trt_cuda_graph_enable"] == "True"
    assert all(isinstance(v, str) for _, opts in providers for v in opts.values())
    assert [p[0] for p in ort_gpu_providers(CONTRACT, tmp_path, route="cuda")] == ["CUDAExecutionProvider",
                                                                                    "CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="route"):
        ort_gpu_providers(CONTRACT, tmp_path, route="rocm")
    # the CPU entry of the list is accepted by a real session (the GPU entries need an onnxruntime-gpu build)
    from tests.test_model import exported_tiny

    _, path = exported_tiny()
    available = set(ort.get_available_providers())
    usable = [p for p in providers if p[0] in available]
    session = ort.InferenceSession(str(path), providers=usable)
    assert session.get_providers()[-1] == "CPUExecutionProvider"


def test_build_engine_without_tensorrt_is_a_clear_error(capsys):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: tests/test_tensorrt_gpu.py covers building")
    from perception.cli import main
    from tests.test_model import exported_tiny

    _, path = exported_tiny()
    assert main(["build-engine", str(path), "--cameras", "1:2:4"]) == 2
    err = capsys.readouterr().err
    assert "perception build-engine: error: TensorRT is not installed" in err and "Traceback" not in err
    assert main(["build-engine", str(path), "--cameras", "5:2:4"]) == 2
    assert "1 <= min <= opt <= max" in capsys.readouterr().err
