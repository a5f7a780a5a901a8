"""The fault matrix against the live path: a NodeProcess reading the ZeroMQ frame bus (real sockets, its
real source and sync threads), publishing on loopback to a real Subscriber; `perception run` as a
subprocess for the signals. Each case asserts what is published and what health says."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from calib.camera import CameraModel, mount_transform
from calib.rig import Rig, save_rig
from perception.errors import SourceError
from perception.frame import Frame
from perception.messaging.subscriber import Subscriber
from perception.node.config import config_from_dict
from perception.node.process import NodeProcess
from perception.sources.framebus import FrameBusPublisher
from perception.sources.slot import CapturedFrame

CAMERAS = ("front", "left", "right")
W, H = 320, 192
PERIOD_NS = 100_000_000  # 10 Hz
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rig() -> Rig:
    return Rig(CameraModel(n, W, H, 300.0, 300.0, (W - 1) / 2, (H - 1) / 2, "none", (),
                           mount_transform(1.5, 0.0, 1.4, yaw_deg=40.0 * (1 - i))) for i, n in enumerate(CAMERAS))


class LiveNode:
    """A node on the frame bus in a thread; `tick` publishes one frame per camera at frame-bus time."""

    def __init__(self, tmp_path: Path, model: Path, **health: float) -> None:
        save_rig(_rig(), tmp_path / "rig.yaml")
        self.bus = f"tcp://127.0.0.1:{_free_port()}"
        out = f"tcp://127.0.0.1:{_free_port()}"
        config = config_from_dict({
            "source": {"kind": "framebus", "endpoint": self.bus, "first_frame_timeout_s": 0},
            "rig": str(tmp_path / "rig.yaml"), "model": str(model), "engine": {"threads": 1},
            "publish": {"endpoint": out},
            "health": {"rate_hz": 10, "lost_after_s": 0.5, "window_s": 2.0, **health}}, "fault.yaml")
        self.publisher = FrameBusPublisher(self.bus)
        self.process = NodeProcess(config)
        self.subscriber = Subscriber(out, ["detections", "health"], rcvhwm=10_000)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.t_ns = 1_000_000_000
        self.seq = {c: 0 for c in CAMERAS}
        self.image = Frame.from_bgr(np.full((H, W, 3), 90, np.uint8))
        self.received: list = []

    def _run(self) -> None:
        try:
            self.summary = self.process.run()
        except BaseException as e:  # noqa: BLE001 - the test asserts on it
            self.error = e

    def tick(self, cameras=CAMERAS, frames: dict[str, CapturedFrame] | None = None) -> None:
        for camera in cameras:
            frame = (frames or {}).get(camera) or CapturedFrame(camera, self.t_ns, self.image, self.seq[camera])
            self.publisher.send(frame)
            self.seq[camera] += 1
        self.t_ns += PERIOD_NS
        time.sleep(PERIOD_NS / 1e9)
        self.drain()

    def run_for(self, seconds: float, cameras=CAMERAS) -> list:
        start = len(self.received)
        for _ in range(round(seconds * 1e9 / PERIOD_NS)):
            self.tick(cameras)
        return self.received[start:]

    def drain(self) -> None:
        while (envelope := self.subscriber.recv(timeout_s=0)) is not None:
            self.received.append(envelope)

    def warm_up(self) -> None:
        """Until detections flow (slow joiners on both sockets)."""
        for _ in range(100):
            self.tick()
            if any(e.topic == "detections" for e in self.received):
                return
        raise AssertionError(f"no detections published (node error: {self.error!r})")

    def close(self) -> None:
        self.process.stop()
        self.thread.join(10)
        self.process.close()
        self.subscriber.close()
        self.publisher.close()


@pytest.fixture(scope="module")
def tiny_model_path():
    pytest.importorskip("torch")  # the tiny test model is exported with torch (the bundled one is too slow
    from tests.test_model import exported_tiny  # for 10 Hz on a loaded CI machine)

    return exported_tiny()[1]


@pytest.fixture
def live(tmp_path, tiny_model_path):
    nodes: list[LiveNode] = []

    def start(**health: float) -> LiveNode:
        nodes.append(LiveNode(tmp_path, tiny_model_path, **health))
        return nodes[-1]

    yield start
    for node in nodes:
        node.close()


def detections(envelopes) -> list:
    return [e.message for e in envelopes if e.topic == "detections"]


def healths(envelopes) -> list:
    return [e.message for e in envelopes if e.topic == "health"]


@pytest.mark.parametrize("lost", ["front", "right"])  # the anchor, another camera
def test_a_lost_camera_anchor_included_keeps_output_going_and_health_names_it(live, lost):
    node = live()
    node.warm_up()
    first = healths(node.run_for(1.0))[-1]
    assert first.state == "ok", first.reasons
    others = tuple(c for c in CAMERAS if c != lost)
    outage = node.run_for(2.0, cameras=others)
    published = detections(outage)
    assert len(published) >= 12  # output goes on (the anchor's outage costs at most lost_after_s)
    late = published[len(published) // 2:]
    assert all(m.stale[CAMERAS.index(lost)] for m in late)
    fresh_others = [not any(m.stale[CAMERAS.index(c)] for c in others) for m in late]
    assert sum(fresh_others) >= 0.8 * len(late)  # (a loaded machine may miss the skew wait now and then)
    last = healths(outage)[-1]
    assert last.state == "degraded" and last.camera_states[CAMERAS.index(lost)] == "lost"
    assert f"camera {lost} lost" in last.reasons
    back = node.run_for(2.5)
    assert sum(not m.stale.any() for m in detections(back)[-5:]) >= 4
    final = healths(back)[-1]
    assert final.state == "ok", final.reasons  # the outage is not counted as lag / frame drop
    assert final.drop_ratio < 0.05
    assert node.error is None


def test_all_cameras_lost_is_a_fault_then_an_error_exit(live):
    node = live(exit_after_s=1.5)
    node.warm_up()
    node.run_for(0.5)
    time.sleep(1.0)
    node.drain()
    assert any(h.state == "fault" for h in healths(node.received[-10:]))
    node.thread.join(5)
    assert isinstance(node.error, SourceError) and "health.exit_after_s" in str(node.error)


def test_a_camera_with_a_wrong_size_is_counted_bad_and_stale(live):
    node = live()
    node.warm_up()
    small = Frame.from_bgr(np.zeros((H // 2, W // 2, 3), np.uint8))
    got = []
    for _ in range(15):
        node.tick(frames={"left": CapturedFrame("left", node.t_ns, small, node.seq["left"])})
    got = node.received[-10:]
    published = detections(got)
    assert published and all(m.stale[1] and not m.stale[0] for m in published)
    assert healths(got)[-1].bad_frames > 0 and healths(got)[-1].state == "degraded"


def test_a_camera_whose_clock_jumps_back_goes_stale_not_the_node(live):
    node = live()
    node.warm_up()
    for _ in range(15):
        node.tick(frames={"right": CapturedFrame("right", node.t_ns - 60_000_000_000, node.image,
                                                 node.seq["right"])})
    published = detections(node.received[-10:])
    assert published and all(m.stale[2] and not m.stale[0] for m in published)
    times = [m.frame_ns for m in detections(node.received)]
    assert times == sorted(times)  # frame-set time never goes back
    assert healths(node.received)[-1].camera_states[2] != "ok"


def test_a_slow_and_a_dead_subscriber_do_not_stall_the_node(live):
    node = live()
    ctx = zmq.Context()
    slow = ctx.socket(zmq.SUB)  # never reads
    slow.setsockopt(zmq.RCVHWM, 1)
    slow.setsockopt(zmq.SUBSCRIBE, b"")
    slow.connect(node.process.config.publish.endpoint)
    dead = ctx.socket(zmq.SUB)
    dead.setsockopt(zmq.SUBSCRIBE, b"")
    dead.connect(node.process.config.publish.endpoint)
    node.warm_up()
    dead.close(linger=0)  # goes away mid-run
    published = detections(node.run_for(2.0))
    assert len(published) >= 18 and node.error is None
    slow.close(linger=0)
    ctx.term()


def test_engine_failure_is_a_fault_and_the_loop_goes_on(live):
    node = live()
    node.warm_up()
    got = []
    for _ in range(10):  # a temporal state for another rig: the engine refuses the next step
        node.process.node.state = node.process.engine.initial_state(len(CAMERAS) + 2)
        got += node.run_for(0.2)
        if any(h.state == "fault" for h in healths(got)):
            break
    assert any(h.state == "fault" and "engine error" in h.reasons for h in healths(got))
    after = node.run_for(1.5)
    assert healths(after)[-1].state == "ok" and len(detections(after)) >= 10 and node.error is None


# ---- signals: `perception run` as a subprocess, recording ----------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("when_s", [0.0, 1.5])
def test_signal_at_start_up_and_mid_run_leaves_a_readable_recording(tmp_path, sig, when_s):
    from replay.synth import cached_drive

    drive = cached_drive(scenario="cut_in", num_cameras=2, seconds=10.0, fps=10.0, seed=3)
    record = tmp_path / "run.mcap"
    config = tmp_path / "node.yaml"
    config.write_text(f"source: {{kind: drive, drive: {drive}, pacing: realtime}}\n"
                      f"record: {record}\npublish: {{endpoint: 'tcp://127.0.0.1:{_free_port()}'}}\n")
    # SIGINT back to its default in the child: a test run started in the background inherits it ignored, and a
    # SIGINT during the interpreter's start-up would then be lost (the node ran the whole drive)
    proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "run", "--config", str(config)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if when_s > 0:  # mid-run: once the node is up (its start-up line), then `when_s` of realtime frames
        started = time.monotonic()
        while b"perception: model" not in proc.stderr.readline():
            assert proc.poll() is None and time.monotonic() - started < 60, "the node did not start"
        time.sleep(when_s)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    # mid-run: Ctrl-C 130 (the CLI policy), SIGTERM 0 (an orderly stop); at start-up (StopSignals: before the
    # node runs) either one interrupts (130), or, during the interpreter's own start-up before any handler
    # exists, ends the process by the signal; never 0: the node cannot have run
    expected = {signal.SIGTERM: (0,), signal.SIGINT: (130,)}[sig] if when_s else (130, -sig)
    assert proc.returncode in expected, (proc.returncode, err.decode()[-2000:])
    assert b"Traceback" not in err, err.decode()[-2000:]
    if record.exists():  # a signal before the recorder opened leaves no file, never a broken one
        from perception.io.run_file import load_run

        run = load_run(record)
        if when_s > 0:
            assert run.topic("detections"), "mid-run: the recording holds what was published"


# ---- frame-bus authentication ----------------------------------------------------------------------------
def test_framebus_curve_accepts_the_listed_node_and_refuses_others(tmp_path):
    from perception.messaging.curve import CurveClientKeys, CurveServerKeys, create_keys
    from perception.sources.framebus import FrameBusReceiver

    bus_public, bus_secret = create_keys(tmp_path / "bus", "bus")
    node_public, node_secret = create_keys(tmp_path / "clients", "node")
    _, intruder_secret = create_keys(tmp_path / "other", "intruder")
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    publisher = FrameBusPublisher(endpoint, curve=CurveServerKeys(bus_secret, tmp_path / "clients"))
    image = Frame.from_bgr(np.zeros((8, 8, 3), np.uint8))

    def receive(secret: Path) -> int:
        stop = threading.Event()
        got: list[CapturedFrame] = []
        receiver = FrameBusReceiver(endpoint, ["front"], curve=CurveClientKeys(secret, bus_public))
        thread = threading.Thread(target=lambda: got.extend(receiver.frames(stop)), daemon=True)
        thread.start()
        for seq in range(20):
            publisher.send(CapturedFrame("front", 1_000 + seq, image, seq))
            time.sleep(0.05)
        stop.set()
        thread.join(5)
        return len(got)

    try:
        assert receive(node_secret) > 0
        assert receive(intruder_secret) == 0
    finally:
        publisher.close()
