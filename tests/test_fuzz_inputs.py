"""Property-based fuzzing of every untrusted input (docs/messages.md "Fuzzing"): ZeroMQ messages (decode
and a real Subscriber on loopback), frame-bus frames, node configuration, the four calibration formats,
model contracts, drive and run files. The only acceptable outcome for any input is a valid result or the
documented error class naming the message / file, within a time bound (hypothesis' deadline) and without
unbounded memory (every reader is size-limited before parsing).

CI runs a short budget; `PERCEPTION_FUZZ_EXAMPLES=100000 pytest -m fuzz tests/test_fuzz_inputs.py` runs the
long one (the examples per input kind).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calib.camera import CameraModel, mount_transform
from calib.formats import read_cameras_text
from calib.rig import Rig, rig_to_yaml_str
from perception.contract import ModelContract
from perception.errors import CalibrationError, ConfigError, DriveError, MessageError, ModelContractError
from perception.frame import Frame
from perception.messaging import decode, encode
from perception.node.config import load_config
from perception.sources.framebus import decode_frame, encode_frame
from perception.sources.slot import CapturedFrame
from tests.test_messaging_codec import sample_detections, sample_health, sample_hints

pytestmark = pytest.mark.fuzz

LONG = int(os.environ.get("PERCEPTION_FUZZ_EXAMPLES", "0"))


def budget(ci_examples: int):
    """hypothesis settings: `ci_examples` in CI, PERCEPTION_FUZZ_EXAMPLES when set."""
    return settings(max_examples=LONG or ci_examples, deadline=2000, database=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def mutate(seed: bytes, data: st.DataObject) -> bytes:
    """`seed` with a few bit flips, byte overwrites, a cut or an insertion."""
    b = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "byte", "cut", "insert"]))
        if not b:
            break
        at = data.draw(st.integers(0, len(b) - 1))
        if kind == "flip":
            b[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "byte":
            b[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del b[at:]
        else:
            b[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(b)


# ---- ZeroMQ messages -----------------------------------------------------------------------------------
SEED_MESSAGES = [encode(m, 7, 1_000) for m in (sample_detections(), sample_hints(), sample_health())]
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8),
                                                                inner, max_size=5),
    max_leaves=30)


def _payload_with(seed: bytes, path: tuple[str, ...], value: object) -> bytes:
    topic, _, payload = seed.partition(b"\0")
    data = msgpack.unpackb(payload, raw=False)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return topic + b"\0" + msgpack.packb(data, use_bin_type=True)


def _field_paths(seed: bytes) -> list[tuple[str, ...]]:
    """Every key path of the payload, nested maps (diag, diag.stage_ns, objects, lead ...) included."""
    paths: list[tuple[str, ...]] = []

    def walk(d: dict, prefix: tuple[str, ...]) -> None:
        for k, v in d.items():
            paths.append((*prefix, k))
            if isinstance(v, dict):
                walk(v, (*prefix, k))

    walk(msgpack.unpackb(seed.partition(b"\0")[2], raw=False), ())
    return sorted(paths)


def _decodes_or_message_error(frame: bytes) -> None:
    try:
        decode(frame)
    except MessageError as e:
        assert len(str(e)) < 2000


@budget(200)
@given(st.data())
def test_fuzz_message_mutations(data):
    _decodes_or_message_error(mutate(data.draw(st.sampled_from(SEED_MESSAGES)), data))


@budget(200)
@given(st.data())
def test_fuzz_message_fields(data):
    seed = data.draw(st.sampled_from(SEED_MESSAGES))
    path = data.draw(st.sampled_from(_field_paths(seed)))
    _decodes_or_message_error(_payload_with(seed, path, data.draw(msgpack_values)))


def _object_table_with(seed: bytes, edit) -> bytes:
    topic, _, payload = seed.partition(b"\0")
    data = msgpack.unpackb(payload, raw=False)
    data["objects"] = edit(data["objects"])
    return topic + b"\0" + msgpack.packb(data, use_bin_type=True)


hostile_floats = st.sampled_from([np.nan, np.inf, -np.inf, -0.0, -0.5, -0.50001, 1.0, 1.0000001, 3.4e38, -1e-45])


@budget(200)
@given(st.data())
def test_fuzz_object_table(data):
    """The binary object table (detections.objects): hostile values in any column of any record, or raw
    byte mutations of the table (length included). Decoded objects must satisfy every documented check."""
    from perception.messaging.schemas import OBJECT_RECORD

    def edit(table: bytes) -> bytes:
        if data.draw(st.booleans()):
            return mutate(table, data)
        records = np.frombuffer(table, OBJECT_RECORD).copy()
        row = data.draw(st.integers(0, len(records) - 1))
        name = data.draw(st.sampled_from(OBJECT_RECORD.names))
        column = records[name].reshape(len(records), -1)
        k = data.draw(st.integers(0, column.shape[1] - 1))
        if column.dtype.kind == "f":
            column[row, k] = data.draw(hostile_floats | st.floats(width=32))
        else:
            column.view(np.uint8)[row, k * column.dtype.itemsize] = data.draw(st.integers(0, 255))
        return records.tobytes()

    frame = _object_table_with(SEED_MESSAGES[0], edit)
    try:
        message = decode(frame).message
    except MessageError as e:
        assert str(e).startswith("detections: field 'objects") and len(str(e)) < 2000
    else:
        o = message.objects
        assert ((o.camera >= 0) & (o.camera < len(message.diag.cameras))).all()
        assert ((o.cls >= 0) & (o.cls < len(message.classes))).all() and (o.range_source <= 3).all()
        assert ((o.score >= 0) & (o.score <= 1)).all() and np.isfinite(o.box).all() and (o.box >= -0.5).all()
        assert (o.box[:, :2] < o.box[:, 2:]).all() and np.isfinite(o.age_s).all() and (o.age_s >= 0).all()
        assert o.coasting.view(np.uint8).max(initial=0) <= 1


def test_fuzz_subscriber_on_loopback_survives_hostile_messages():
    """A real PUB socket sends mutated messages between valid ones: recv() returns only valid envelopes
    and never raises; the bad ones are counted."""
    import random

    import zmq

    from perception.messaging import Subscriber

    rng = random.Random(12)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=100_000)
    try:
        for _ in range(50):  # slow joiner: wait until a valid message gets through
            pub.send(SEED_MESSAGES[2])
            if sub.recv(timeout_s=0.1) is not None:
                break
        n = LONG or 2_000
        sent_valid = 0
        for i in range(n):
            seed = SEED_MESSAGES[i % 3]
            frame = bytearray(seed)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(frame))
                frame[at] ^= 1 << rng.randrange(8)
            pub.send(bytes(frame))
            if i % 100 == 0:
                pub.send(SEED_MESSAGES[0])
                sent_valid += 1
            while sub.recv(timeout_s=0) is not None:
                pass
        received = 0
        while sub.recv(timeout_s=0.5) is not None:
            received += 1
        bad = sum(s.bad for s in sub.stats.values())
        good = sum(s.received for s in sub.stats.values())
        assert bad > 0 and good >= sent_valid
    finally:
        sub.close()
        pub.close()
        ctx.term()


# ---- frame-bus frames ----------------------------------------------------------------------------------
FRAMEBUS_SEED = [bytes(p) for p in encode_frame("front", CapturedFrame(
    "front", 10, Frame.from_bgr(np.zeros((8, 12, 3), np.uint8)), 3))]


@budget(200)
@given(st.data())
def test_fuzz_framebus_frames(data):
    parts = list(FRAMEBUS_SEED)
    which = data.draw(st.integers(0, 2))
    if which == 1 and data.draw(st.booleans()):
        header = msgpack.unpackb(parts[1])
        header[data.draw(st.sampled_from(sorted(header)))] = data.draw(msgpack_values)
        parts[1] = msgpack.packb(header, use_bin_type=True)
    else:
        parts[which] = mutate(parts[which], data)
    if data.draw(st.integers(0, 9)) == 0:
        parts = parts[:data.draw(st.integers(0, 2))] + [b""] * data.draw(st.integers(0, 2))
    try:
        captured = decode_frame(parts)
    except MessageError as e:
        assert str(e).startswith("framebus") and len(str(e)) < 2000
    else:
        assert captured.frame.data.size >= captured.frame.stride * captured.frame.height > 0 or \
            captured.frame.width * captured.frame.height == 0


# ---- node configuration --------------------------------------------------------------------------------
CONFIG_SEED = b"""source: {kind: drive, pacing: fast, loop: false}
sync: {max_skew_ms: 20}
engine: {kind: onnxruntime, threads: 2}
preprocess: cpu
decode: {score_threshold: {car: 0.4, pedestrian: 0.3}, nms_iou: 0.5}
tracker: {max_misses: 5}
publish: {endpoint: "tcp://127.0.0.1:7450", sndhwm: 64}
health: {rate_hz: 2, lag_drop_ratio: 0.2, lost_after_s: 1.0, window_s: 5.0}
"""
yaml_scalars = st.sampled_from(["~", "true", "-1", "0", "1e+400", ".nan", "'x'", "[a]", "{a: 1}", "&a x", "*a",
                                "!!timestamp 2001-01-01", "!!int abc", "9" * 30, "\"\\x00\"", "[[[[[]]]]]"])


def _config_or_error(path: Path) -> None:
    try:
        load_config(path)
    except ConfigError as e:
        assert str(path) in str(e) and len(str(e)) < 2000


@budget(60)
@given(st.data())
def test_fuzz_node_config_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "node.yaml"
    path.write_bytes(mutate(CONFIG_SEED, data))
    _config_or_error(path)


@budget(60)
@given(st.data())
def test_fuzz_node_config_values(tmp_path_factory, data):
    lines = CONFIG_SEED.decode().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    key = lines[i].split(":")[0]
    lines[i] = f"{key}: {data.draw(yaml_scalars)}"
    path = tmp_path_factory.mktemp("cfg") / "node.yaml"
    path.write_text("\n".join(lines) + "\n")
    _config_or_error(path)


# ---- calibration formats -------------------------------------------------------------------------------
RIG = Rig([CameraModel("front", 1920, 1080, 1000.0, 1001.0, 959.5, 539.5, "plumb_bob",
                       (-0.1, 0.01, 0.001, 0.0, 0.0), mount_transform(1.5, 0.0, 1.4))])
CALIBRATION_SEEDS = {
    "rig": rig_to_yaml_str(RIG),
    "ros": """image_width: 640
image_height: 480
camera_name: front
camera_matrix: {rows: 3, cols: 3, data: [500.0, 0.0, 319.5, 0.0, 501.0, 239.5, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [-0.2, 0.05, 0.001, 0.0, 0.0]}
""",
    "opencv": """%YAML:1.0
---
image_width: 640
image_height: 480
camera_matrix: !!opencv-matrix
   rows: 3
   cols: 3
   dt: d
   data: [500.0, 0.0, 319.5, 0.0, 501.0, 239.5, 0.0, 0.0, 1.0]
distortion_coefficients: !!opencv-matrix
   rows: 5
   cols: 1
   dt: d
   data: [-0.2, 0.05, 0.001, 0.0, 0.0]
""",
    "kalibr": """cam0:
  camera_model: pinhole
  intrinsics: [500.0, 501.0, 319.5, 239.5]
  distortion_model: radtan
  distortion_coeffs: [-0.2, 0.05, 0.001, 0.0]
  resolution: [640, 480]
cam1:
  camera_model: pinhole
  intrinsics: [500.0, 501.0, 319.5, 239.5]
  distortion_model: equidistant
  distortion_coeffs: [0.01, 0.0, 0.0, 0.0]
  resolution: [640, 480]
  T_cn_cnm1: [[1, 0, 0, -0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
""",
}


def test_calibration_seeds_are_valid():
    for name, text in CALIBRATION_SEEDS.items():
        assert read_cameras_text(text, f"{name}.yaml"), name


@pytest.mark.parametrize("fmt", sorted(CALIBRATION_SEEDS))
@budget(50)
@given(data=st.data())
def test_fuzz_calibration(fmt, data):
    seed = CALIBRATION_SEEDS[fmt]
    if data.draw(st.booleans()):
        text = mutate(seed.encode(), data).decode("utf-8", errors="replace")
    else:
        lines = seed.splitlines()
        i = data.draw(st.integers(0, len(lines) - 1))
        head = lines[i].split(":")[0]
        lines[i] = f"{head}: {data.draw(yaml_scalars)}"
        text = "\n".join(lines) + "\n"
    try:
        read_cameras_text(text, f"{fmt}.yaml")
    except CalibrationError as e:
        assert str(e).startswith(f"{fmt}.yaml") and len(str(e)) < 2000


# ---- model contracts -----------------------------------------------------------------------------------
def _contract_seed() -> str | None:
    from perception.contract import load_model
    from perception.node.defaults import DEMO_MODEL

    return load_model(DEMO_MODEL).contract.to_json() if DEMO_MODEL.exists() else None


_CONTRACT_TEXT = _contract_seed()


@pytest.mark.skipif(_CONTRACT_TEXT is None, reason="the bundled demo model is absent")
@budget(200)
@given(st.data())
def test_fuzz_model_contract(data):
    seed = _CONTRACT_TEXT
    if data.draw(st.booleans()):
        text = mutate(seed.encode(), data).decode("utf-8", errors="replace")
    else:
        d = json.loads(seed)
        d[data.draw(st.sampled_from(sorted(d)))] = data.draw(
            st.recursive(st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=4), max_leaves=10))
        text = json.dumps(d)
    try:
        ModelContract.from_json(text, "model.onnx")
    except ModelContractError as e:
        assert str(e).startswith("model.onnx") and len(str(e)) < 2000



# ---- drive and run files -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_drive(tmp_path_factory) -> bytes:
    from perception.io.drive import DriveWriter

    path = tmp_path_factory.mktemp("drive") / "d.mcap"
    rig = Rig([CameraModel(n, 32, 24, 30.0, 30.0, 15.5, 11.5) for n in ("front", "left")])
    with DriveWriter(path, rig, chunk_size=3_000) as writer:
        for i in range(8):
            for k, camera in enumerate(rig):
                writer.write_frame(camera, i * 100_000_000 + k, Frame.from_bgr(np.full((24, 32, 3), i, np.uint8)))
    return path.read_bytes()


def _read_drive(path: Path) -> None:
    from perception.io.drive import open_drive

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            drive = open_drive(path)
            try:
                for f in drive.frames(on_bad_frame=lambda e: None):
                    assert f.frame.width == 32
            finally:
                drive.close()
        except DriveError as e:
            assert str(path) in str(e) and len(str(e)) < 2000
        except CalibrationError as e:  # the rig attachment is a calibration file
            assert str(path) in str(e)


@budget(60)
@given(data=st.data())
def test_fuzz_drive_files(small_drive, tmp_path_factory, data):
    """Truncation anywhere and bit flips in the data and the summary sections."""
    path = tmp_path_factory.mktemp("fuzz") / "d.mcap"
    path.write_bytes(mutate(small_drive, data))
    _read_drive(path)


@budget(40)
@given(data=st.data())
def test_fuzz_run_files(tmp_path_factory, data, golden_run_bytes):
    from perception.io.run_file import load_run

    path = tmp_path_factory.mktemp("fuzz") / "run.mcap"
    path.write_bytes(mutate(golden_run_bytes, data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_run(path)
        except (DriveError, CalibrationError, MessageError) as e:
            assert str(path) in str(e) and len(str(e)) < 2000


@pytest.fixture(scope="module")
def golden_run_bytes() -> bytes:
    runs = sorted((Path(__file__).parent / "golden").glob("*.mcap"))
    if not runs:
        pytest.skip("no golden run file in tests/golden")
    data = runs[0].read_bytes()
    if len(data) > 4 << 20:
        pytest.skip("golden run too large to fuzz in CI")
    return data


@pytest.mark.skipif(_CONTRACT_TEXT is None, reason="the bundled demo model is absent")
def test_contract_with_stride_zero_is_a_contract_error():
    """Found by the long fuzz run: a zero stride divided by zero in the consistency check."""
    d = json.loads(_CONTRACT_TEXT)
    d["stride"] = 0
    with pytest.raises(ModelContractError, match="model.onnx: inconsistent contract: stride 0"):
        ModelContract.from_json(json.dumps(d), "model.onnx")
