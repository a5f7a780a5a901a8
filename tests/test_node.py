"""The node: configuration, the core loop on real drives, degraded cameras, bad frames, publishing."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import zmq

pytest.importorskip("torch")

from perception.errors import ConfigError  # noqa: E402
from perception.frame import Frame  # noqa: E402
from perception.messaging.subscriber import Subscriber  # noqa: E402
from perception.node.config import HealthConfig, NodeConfig, config_from_dict, load_config  # noqa: E402
from perception.node.assembly import build_node  # noqa: E402
from perception.node.process import NodeProcess  # noqa: E402
from perception.engine.onnxruntime import OnnxRuntimeEngine  # noqa: E402
from perception.sources import LockstepSynchronizer, SyncConfig  # noqa: E402
from perception.sources.slot import CapturedFrame  # noqa: E402
from perception.io.drive import open_drive  # noqa: E402
from replay.synth import cached_drive  # noqa: E402
from tests.test_model import exported_tiny  # noqa: E402

DRIVE = dict(seed=5, seconds=2.0, fps=10.0, num_cameras=2, scenario="lead_brake", width=320, height=180)


@pytest.fixture(scope="module")
def tiny_model_path():
    return exported_tiny()[1]


@pytest.fixture(scope="module")
def drive_path():
    return cached_drive(**DRIVE)


def _config(tiny_model_path, drive_path, tmp_path, **source) -> NodeConfig:
    return config_from_dict({
        "source": {"drive": str(drive_path), "pacing": "lockstep", **source},
        "model": str(tiny_model_path), "engine": {"threads": 1},
        "publish": {"endpoint": f"ipc://{tmp_path}/node"},
        "health": {"rate_hz": 100.0},
    }, "test.yaml")


def _frame_sets(drive_path, cameras, drop=lambda f: False):
    drive = open_drive(drive_path)
    frames = [CapturedFrame(cf.camera, cf.t_ns, cf.frame, i) for i, cf in enumerate(drive.frames())]
    sync = LockstepSynchronizer(SyncConfig(tuple(cameras), cameras[0], 20.0))
    return list(sync.frame_sets(f for f in frames if not drop(f))), drive.rig


# ---- configuration -----------------------------------------------------------------------------------
def test_config_file_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "node.yaml").write_text(
        "source: {drive: drives/a.mcap, pacing: fast}\nmodel: m.onnx\nsync: {anchor: front, max_skew_ms: 30}\n"
        "decode: {score_threshold: {car: 0.4}}\ntracker: {confirm_hits: 2}\nhints: {brake_ttc_on_s: 1.5}\n")
    cfg = load_config(tmp_path / "node.yaml")
    assert cfg.source.drive == str(tmp_path / "drives/a.mcap") and cfg.source.pacing == "fast"
    assert cfg.model == str(tmp_path / "m.onnx") and cfg.sync.anchor == "front" and cfg.sync.max_skew_ms == 30
    assert cfg.decode.score_threshold == {"car": 0.4} and cfg.tracker.confirm_hits == 2
    assert cfg.hints.brake_ttc_on_s == 1.5
    assert load_config(None) == NodeConfig()


@pytest.mark.parametrize("data, message", [
    ({"sourc": {}}, r"test.yaml.sourc: unknown key"),
    ({"source": {"pacing": "slow"}}, r"test.yaml.source.pacing: must be one of realtime, fast, lockstep"),
    ({"source": {"kind": "cameras", "cameras": {"front": "0"}}}, r"test.yaml.rig: a rig calibration file is needed"),
    ({"source": {"kind": "framebus"}, "rig": "r.yaml"}, r"test.yaml.source.endpoint"),
    ({"decode": {"score_threshold": {"car": 1.5}}}, r"test.yaml.decode.score_threshold.car: must be <= 1.0, got 1.5"),
    ({"tracker": {"max_misses": -1}}, r"test.yaml.tracker.max_misses: must be >= 0"),
    ({"hints": {"brake_ttc_off_s": 1.0}}, r"test.yaml.hints.brake_ttc_off_s: must be > brake_ttc_on_s"),
    ({"publish": {"endpoint": "http://x"}}, r"test.yaml.publish.endpoint"),
    ({"publish": {"curve_secret_key": "k"}}, r"CURVE needs both"),
    ({"engine": {"kind": "tensorflow"}}, r"test.yaml.engine.kind: must be one of onnxruntime, tensorrt"),
    ({"engine": {"threads": 0}}, r"test.yaml.engine.threads: must be >= 1, got 0"),
    ({"source": {"loop": "yes"}}, r"test.yaml.source.loop: must be true or false"),
    ({"source": {"kind": "cameras"}, "rig": "r.yaml"}, r"test.yaml.source.cameras: kind 'cameras' needs"),
    ({"model": 3}, r"test.yaml.model: must be a file path, got 3"),
    ({"publish": {"endpoint": None, "sndhwm": 0}}, r"test.yaml.publish.sndhwm: must be >= 1"),
    ({"health": {"lag_drop_ratio": 2}}, r"test.yaml.health.lag_drop_ratio: must be < 1"),
    ([1, 2], r"test.yaml: must be a mapping"),
])
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, "test.yaml")


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("source: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(path)


# ---- the core ----------------------------------------------------------------------------------------
def test_node_outputs_follow_drive_time_and_replay_identically(tiny_model_path, drive_path, tmp_path):
    config = _config(tiny_model_path, drive_path, tmp_path)
    runs = []
    for _ in range(2):
        sets, rig = _frame_sets(drive_path, ("front", "front_left"))
        node = build_node(rig, config, OnnxRuntimeEngine(tiny_model_path, threads=1))
        outs = [node.step(fs, captured_total=0) for fs in sets]
        runs.append(outs)
    assert len(runs[0]) == 20
    for fs, out in zip(sets, runs[0]):
        assert out.detections.frame_ns == fs.t_ns == out.hints.frame_ns
        assert set(out.stage_ns) == {"preprocess", "engine", "decode", "track", "hints"}
        assert list(out.detections.diag.capture_ns) == [fs.frames[c].t_ns for c in ("front", "front_left")]
    for a, b in zip(*runs):
        for field in ("track_id", "cls", "score", "box", "range_m", "position", "velocity", "ttc_s"):
            np.testing.assert_array_equal(getattr(a.detections.objects, field), getattr(b.detections.objects, field))
        assert (a.hints.brake, a.hints.speed_cap_mps, a.hints.lead) == (b.hints.brake, b.hints.speed_cap_mps, b.hints.lead)


def test_camera_loss_degrades_within_two_periods_and_recovers(tiny_model_path, drive_path, tmp_path):
    config = _config(tiny_model_path, drive_path, tmp_path)
    sets, rig = _frame_sets(drive_path, ("front", "front_left"))
    t_lost, t_back = sets[6].t_ns, sets[12].t_ns
    sets, _ = _frame_sets(drive_path, ("front", "front_left"),
                          drop=lambda f: f.camera == "front_left" and t_lost <= f.t_ns < t_back)
    node = build_node(rig, config, OnnxRuntimeEngine(tiny_model_path, threads=1))
    states = [node.step(fs, captured_total=0).health for fs in sets]
    assert all(h is not None for h in states)  # rate_hz 100: a report every frame set
    assert [h.state for h in states[:6]] == ["ok"] * 6
    assert states[6].state == "degraded" and "camera front_left stale" in states[6].reasons
    assert states[6].camera_states == ("ok", "stale")
    assert all(h.state == "degraded" for h in states[6:12])
    assert states[12].state == "ok" and states[13].state == "ok"


def test_corrupt_frame_is_counted_not_fatal(tiny_model_path, drive_path, tmp_path):
    config = _config(tiny_model_path, drive_path, tmp_path)
    sets, rig = _frame_sets(drive_path, ("front", "front_left"))
    wrong = Frame.from_bgr(np.zeros((90, 160, 3), np.uint8))  # not the calibrated 320x180
    bad = sets[3].frames["front_left"]
    sets[3].frames["front_left"] = dataclasses.replace(bad, frame=wrong)
    node = build_node(rig, config, OnnxRuntimeEngine(tiny_model_path, threads=1))
    outs = [node.step(fs, captured_total=0) for fs in sets]
    assert node.stats.bad_frames == 1
    assert outs[3].detections.stale.tolist() == [False, True]
    assert outs[3].health.bad_frames == 1 and outs[4].detections.stale.tolist() == [False, False]


def test_engine_failure_is_reported_as_fault_and_the_loop_goes_on(tiny_model_path, drive_path, tmp_path):
    config = _config(tiny_model_path, drive_path, tmp_path)
    sets, rig = _frame_sets(drive_path, ("front", "front_left"))
    node = build_node(rig, config, OnnxRuntimeEngine(tiny_model_path, threads=1))
    node.step(sets[0], 0)
    node.state = node.engine.initial_state(3)  # a state for another rig: the engine refuses the step
    out = node.step(sets[1], 0)
    assert out.health.state == "fault" and "engine error" in out.health.reasons
    assert len(out.detections.objects) == 0
    assert node.step(sets[2], 0).health.state == "ok"


# ---- the process: real sockets -----------------------------------------------------------------------
def test_subscriber_on_loopback_receives_every_topic(tiny_model_path, drive_path, tmp_path):
    config = _config(tiny_model_path, drive_path, tmp_path, pacing="fast")
    with NodeProcess(config) as process:
        with Subscriber(config.publish.endpoint) as sub:
            import time
            time.sleep(0.3)  # slow joiner: let the SUB connect before the node publishes
            summary = process.run()
            got = {}
            while (env := sub.recv(timeout_s=0.5)) is not None:
                got.setdefault(env.topic, []).append(env)
    assert summary.frame_sets == 20 and summary.dropped == 0
    assert len(got["detections"]) == 20 and len(got["hints"]) == 20 and len(got["health"]) >= 1
    assert [e.seq for e in got["detections"]] == list(range(20))
    frame_ns = [e.message.frame_ns for e in got["detections"]]
    assert frame_ns == sorted(frame_ns) and all(e.message.diag.model_id for e in got["hints"])


def test_subscriber_that_never_reads_does_not_stall_the_loop(tiny_model_path, drive_path, tmp_path):
    config = dataclasses.replace(_config(tiny_model_path, drive_path, tmp_path),
                                 publish=dataclasses.replace(NodeConfig().publish, endpoint=f"ipc://{tmp_path}/n2",
                                                             sndhwm=2),
                                 source=dataclasses.replace(NodeConfig().source, drive=str(drive_path),
                                                            pacing="lockstep", loop=True))
    ctx = zmq.Context()
    lazy = ctx.socket(zmq.SUB)
    lazy.setsockopt(zmq.RCVHWM, 1)
    lazy.setsockopt(zmq.SUBSCRIBE, b"")
    lazy.connect(config.publish.endpoint)
    try:
        with NodeProcess(config) as process:
            summary = process.run(max_frame_sets=60)  # three loops of the drive, nobody reading
    finally:
        lazy.close(linger=0)
        ctx.term()
    assert summary.frame_sets == 60


def test_run_command_on_a_drive(tiny_model_path, drive_path, tmp_path, capsys):
    from perception.cli import main

    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"model: {tiny_model_path}\nengine: {{threads: 1}}\npublish: {{endpoint: 'ipc://{tmp_path}/c'}}\n")
    assert main(["run", "--config", str(cfg), "--drive", str(drive_path), "--pacing", "fast", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "20 frame sets" in err and "outputs to zmq ipc://" in err


def test_replay_is_deterministic_and_recorded_at_drive_time(tiny_model_path, drive_path, tmp_path):
    from replay.determinism import assert_runs_identical
    from perception.io.run_file import RunReader
    from replay.runner import replay_drive

    config = _config(tiny_model_path, drive_path, tmp_path)
    for name in ("a.mcap", "b.mcap"):
        summary = replay_drive(drive_path, tmp_path / name, config)
        assert summary.frame_sets == 20
    assert_runs_identical(tmp_path / "a.mcap", tmp_path / "b.mcap")
    with RunReader(tmp_path / "a.mcap") as run:
        detections = [m for m in run.messages(["detections"])]
    drive = open_drive(drive_path)
    front_times = sorted({cf.t_ns for cf in drive.frames(cameras=["front"])})
    assert [m.t_ns for m in detections] == front_times


# ---- assembly: sources, stages, sinks ----------------------------------------------------------------
def test_host_engine_refuses_a_device_batch(tiny_model_path):
    from perception.engine.base import DeviceBatch, EngineInputError

    engine = OnnxRuntimeEngine(tiny_model_path, threads=1)
    c = engine.contract
    batch = DeviceBatch(0, (1, 3, c.input_height, c.input_width), np.dtype(np.float32), 0)
    with pytest.raises(EngineInputError, match="host batches only"):
        engine.run_device(batch, np.zeros(1, np.int64), engine.initial_state(1))


def test_attached_sink_gets_every_frame_set_and_its_drops_reach_health(tiny_model_path, drive_path, tmp_path):
    from perception.node.sinks import Sink

    class Lossy(Sink):
        """Keeps what it is given and reports one undelivered message per frame set."""
        name = "lossy"

        def __init__(self) -> None:
            self.got = []
            self.closed = False

        def write(self, outputs) -> None:
            self.got.append(outputs)

        @property
        def drops(self) -> int:
            return len(self.got)

        def close(self) -> None:
            self.closed = True

    config = dataclasses.replace(_config(tiny_model_path, drive_path, tmp_path),
                                 publish=dataclasses.replace(NodeConfig().publish, endpoint=None))
    sink = Lossy()
    with NodeProcess(config) as process:
        assert process.sinks == []  # publish.endpoint null: no socket
        process.attach(sink)
        summary = process.run()
    assert sink.closed and summary.frame_sets == len(sink.got) == 20
    assert [o.detections.frame_ns for o in sink.got] == sorted(o.detections.frame_ns for o in sink.got)
    # health is built before the frame set's write: it reports the drops of the frame sets before it
    assert [o.health.publish_drops for o in sink.got] == list(range(20))


def test_lockstep_drive_source_delivers_every_frame_in_order(drive_path):
    from perception.sources.recorded import DriveSource

    source = DriveSource(open_drive(drive_path), "lockstep", loop=True)
    sync = SyncConfig(("front", "front_left"), "front", 20.0)
    stop = threading.Event()
    arrivals = []
    for arrival in source.arrivals(sync, lambda reason: None, stop):
        arrivals.append(arrival)
        if len(arrivals) == 45:
            stop.set()
    source.close()
    t = [a.frame_set.t_ns for a in arrivals]
    assert len(t) >= 40 and t == sorted(t) and len(set(t)) == len(t)  # looped with increasing times
    assert all(set(a.frame_set.frames) == {"front", "front_left"} for a in arrivals[:40])
    assert [a.captured_total for a in arrivals] == sorted(a.captured_total for a in arrivals)


def test_engine_kind_torch_runs_the_exported_model_in_the_node(tiny_model_path, drive_path, tmp_path):
    """`engine: {kind: torch}` (GPU machines without TensorRT / ONNX Runtime GPU; the CPU here): the same
    objects as ONNX Runtime, scores within float rounding."""
    from perception.node.assembly import open_engine

    base = _config(tiny_model_path, drive_path, tmp_path)
    torch_config = dataclasses.replace(base, engine=dataclasses.replace(base.engine, kind="torch"))
    engine = open_engine(torch_config)
    assert engine.name.startswith("torch") and engine.contract.model_id == OnnxRuntimeEngine(tiny_model_path).contract.model_id
    outs = {}
    for name, eng in (("torch", engine), ("onnxruntime", OnnxRuntimeEngine(tiny_model_path, threads=1))):
        sets, rig = _frame_sets(drive_path, ("front", "front_left"))
        node = build_node(rig, base, eng)
        outs[name] = [node.step(fs, captured_total=0).detections.objects for fs in sets]
    assert sum(len(o.score) for o in outs["torch"]) > 0
    for a, b in zip(outs["torch"], outs["onnxruntime"]):
        np.testing.assert_array_equal(a.track_id, b.track_id)
        np.testing.assert_allclose(a.score, b.score, atol=1e-4)
