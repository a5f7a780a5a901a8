"""Messages <-> bytes: round trips, and untrusted bytes rejected with errors naming topic and field."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perception.errors import MessageError
from perception.labels import CLASSES
from perception.messaging import (
    SERVICES, DetectionsMessage, Diagnostics, HealthMessage, HintsMessage, RangeSource, WireLead, WireObjects,
    decode, encode,
)
from perception.messaging.services import MAX_OBJECTS, topic_prefix

CAMERAS = ("front", "left", "right")


def sample_diag() -> Diagnostics:
    return Diagnostics("demo-v1", CAMERAS, [1_000_000_000, 999_000_000, -1], [0, 2, 7],
                       {"sync": 120_000, "preprocess": 2_500_000, "engine": 21_000_000})


def sample_objects(n: int = 5, seed: int = 0) -> WireObjects:
    rng = np.random.default_rng(seed)
    x0y0 = rng.uniform(0, 1000, (n, 2))
    return WireObjects(
        track_id=np.arange(100, 100 + n), camera=rng.integers(0, len(CAMERAS), n), cls=rng.integers(0, 4, n),
        score=rng.uniform(0.3, 1, n), box=np.hstack([x0y0, x0y0 + rng.uniform(5, 200, (n, 2))]),
        range_m=np.where(np.arange(n) % 4 == 3, np.nan, rng.uniform(2, 120, n)),
        range_source=np.arange(n) % 4, position=rng.normal(0, 20, (n, 3)), velocity=rng.normal(0, 5, (n, 3)),
        ttc_s=np.where(np.arange(n) % 2 == 0, np.inf, rng.uniform(0.5, 20, n)), age_s=np.arange(n) * 0.5,
        coasting=np.arange(n) % 3 == 0,
    )


def sample_detections(n: int = 5) -> DetectionsMessage:
    return DetectionsMessage(sample_diag(), 1_000_000_000, [False, False, True], CLASSES, sample_objects(n))


def sample_hints(lead: bool = True) -> HintsMessage:
    return HintsMessage(sample_diag(), 1_000_000_000, WireLead(101, 23.5, -3.25, 7.2) if lead else None, "prepare",
                        12.5, 31.0, [104, 107], 0.85)


def sample_health() -> HealthMessage:
    return HealthMessage(sample_diag(), "degraded", ("camera right lost",), ("ok", "ok", "lost"), 31.5, 44.0,
                         19.7, 0.04, 3, 0)


def repack(frame: bytes, mutate) -> bytes:
    """Decode a valid frame's payload without our checks, let `mutate` edit the dict, re-encode."""
    topic, _, payload = frame.partition(b"\0")
    data = msgpack.unpackb(payload, raw=False)
    mutate(data)
    return topic + b"\0" + msgpack.packb(data)


def assert_same_objects(a: WireObjects, b: WireObjects) -> None:
    for name in ("track_id", "camera", "cls", "score", "box", "range_m", "range_source", "position", "velocity",
                 "ttc_s", "age_s", "coasting"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)  # NaN == NaN, inf == inf here


def test_detections_round_trip():
    msg = sample_detections(7)
    frame = encode(msg, seq=41, publish_ns=1_000_500_000)
    assert frame.startswith(b"detections\0")
    env = decode(frame)
    assert (env.topic, env.seq, env.publish_ns) == ("detections", 41, 1_000_500_000)
    got = env.message
    assert isinstance(got, DetectionsMessage)
    assert got.frame_ns == msg.frame_ns and got.classes == CLASSES
    np.testing.assert_array_equal(got.stale, [False, False, True])
    assert got.diag.cameras == CAMERAS and got.diag.model_id == "demo-v1"
    np.testing.assert_array_equal(got.diag.capture_ns, msg.diag.capture_ns)
    np.testing.assert_array_equal(got.diag.dropped_frames, [0, 2, 7])
    assert got.diag.stage_ns == msg.diag.stage_ns
    assert_same_objects(got.objects, msg.objects)
    assert np.isnan(got.objects.range_m[3]) and np.isinf(got.objects.ttc_s[0])
    assert got.objects.box.dtype == np.float32 and got.objects.track_id.dtype == np.int64


def test_arrays_travel_as_binary_not_float_lists():
    frame = encode(sample_detections(200), 0, 0)
    data = msgpack.unpackb(frame.partition(b"\0")[2], raw=False)
    assert data["stale"] == b"\0\0\1" and data["diag"]["capture_ns"] == np.array([1e9, 999e6, -1], "<i8").tobytes()
    assert data["diag"]["dropped_frames"] == np.array([0, 2, 7], "<i8").tobytes()
    assert isinstance(data["objects"], bytes) and len(data["objects"]) == 200 * 80  # one record per object
    hints = msgpack.unpackb(encode(sample_hints(), 0, 0).partition(b"\0")[2], raw=False)
    assert hints["cut_in_ids"] == np.array([104, 107], "<i8").tobytes()
    assert len(frame) < 200 * 80 + 600


def test_object_record_layout_is_the_documented_one():
    """docs/messages.md: offsets, little-endian types and zero padding, read here with struct alone (as a
    reader in another language would)."""
    import struct

    msg = sample_detections(3)
    table = msgpack.unpackb(encode(msg, 0, 0).partition(b"\0")[2], raw=False)["objects"]
    o = msg.objects
    for i in range(3):
        r = table[80 * i:80 * (i + 1)]
        assert struct.unpack_from("<qii", r, 0) == (o.track_id[i], o.camera[i], o.cls[i])
        floats = struct.unpack_from("<14f", r, 16)
        np.testing.assert_array_equal(floats, np.concatenate([[o.score[i]], o.box[i], [o.age_s[i], o.range_m[i]],
                                                              o.position[i], o.velocity[i], [o.ttc_s[i]]]))
        assert (r[72], r[73], r[74:]) == (o.range_source[i], o.coasting[i], bytes(6))


def test_decoded_columns_view_one_read_only_aligned_table():
    got = decode(encode(sample_detections(6), 0, 0)).message.objects
    assert not {"track_id", "box"} & set(vars(got))  # made on first access
    for name in ("track_id", "box", "score", "coasting"):
        column = getattr(got, name)
        assert not column.flags.writeable and column.flags.aligned, name
        assert column.base is not None and column.base is got.track_id.base, name  # views, no copies
    with pytest.raises(ValueError, match="from_records"):
        WireObjects.from_records(np.zeros(3, np.float32))
    with pytest.raises(AttributeError, match="no attribute 'boxes'"):
        got.boxes  # noqa: B018
    diag = decode(encode(sample_detections(6), 0, 0)).message.diag
    for array in (diag.capture_ns, diag.dropped_frames):
        assert array.dtype == np.int64 and not array.flags.writeable and array.flags.aligned


def test_empty_detections_round_trip():
    msg = DetectionsMessage(sample_diag(), 5, [True, True, True], CLASSES, WireObjects.empty())
    got = decode(encode(msg, 0, 0)).message
    assert len(got.objects) == 0 and got.objects.box.shape == (0, 4)


@pytest.mark.parametrize("lead", [True, False])
def test_hints_round_trip(lead):
    msg = sample_hints(lead)
    env = decode(encode(msg, 3, 77))
    got = env.message
    assert isinstance(got, HintsMessage) and env.topic == "hints"
    assert got.lead == msg.lead
    assert (got.brake, got.speed_cap_mps, got.free_distance_m, got.confidence) == ("prepare", 12.5, 31.0, 0.85)
    np.testing.assert_array_equal(got.cut_in_ids, [104, 107])


def test_hints_infinities_survive():
    msg = HintsMessage(sample_diag(), 1, WireLead(5, 40.0, 1.0, math.inf), "none", math.inf, math.inf, [], 1.0)
    got = decode(encode(msg, 0, 0)).message
    assert got.lead.ttc_s == math.inf and got.speed_cap_mps == math.inf and got.cut_in_ids.shape == (0,)


def test_health_round_trip():
    msg = sample_health()
    got = decode(encode(msg, 9, 10)).message
    assert isinstance(got, HealthMessage)
    assert (got.state, got.reasons, got.camera_states) == ("degraded", ("camera right lost",), ("ok", "ok", "lost"))
    assert (got.latency_p50_ms, got.latency_p99_ms, got.rate_hz, got.drop_ratio) == (31.5, 44.0, 19.7, 0.04)
    assert (got.bad_frames, got.publish_drops) == (3, 0)


def test_constructors_reject_inconsistent_data():
    with pytest.raises(ValueError, match="box"):
        WireObjects(**{**vars(sample_objects(3)), "box": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="score"):
        WireObjects(**{**vars(sample_objects(3)), "score": np.zeros(4)})
    with pytest.raises(ValueError, match="capture_ns"):
        Diagnostics("m", CAMERAS, [1, 2], [0, 0, 0])
    with pytest.raises(ValueError, match="brake"):
        HintsMessage(sample_diag(), 0, None, "slam", 1.0, 1.0, [], 1.0)
    with pytest.raises(ValueError, match="camera_states"):
        HealthMessage(sample_diag(), "ok", (), ("ok", "ok"), 1, 1, 1, 0, 0, 0)


def test_encode_refuses_message_over_the_topic_limit():
    big = DetectionsMessage(sample_diag(), 0, [False] * 3, CLASSES, sample_objects(20_000))
    with pytest.raises(MessageError, match=r"detections: message of \d+ bytes exceeds"):
        encode(big, 0, 0)


def test_unknown_fields_are_ignored():
    frame = repack(encode(sample_hints(), 0, 0), lambda d: d.update(future_field=[1, 2]))
    assert decode(frame).message.brake == "prepare"


def _set(path: str, value):
    def mutate(d):
        *parents, leaf = path.split(".")
        for p in parents:
            d = d[p]
        d[leaf] = value
    return mutate


def _delete(path: str):
    def mutate(d):
        *parents, leaf = path.split(".")
        for p in parents:
            d = d[p]
        del d[leaf]
    return mutate


def _set_object(row: int, name: str, value):
    """Edit one column of one record of the binary object table."""
    from perception.messaging.schemas import OBJECT_RECORD

    def mutate(d):
        records = np.frombuffer(d["objects"], OBJECT_RECORD).copy()
        records[name][row] = value
        d["objects"] = records.tobytes()
    return mutate


def _set_byte(offset: int, value: int):
    def mutate(d):
        table = bytearray(d["objects"])
        table[offset] = value
        d["objects"] = bytes(table)
    return mutate


BAD_FIELDS = [
    ("detections", _set("schema", 2), r"detections: schema version 2, this reader supports 3"),
    ("detections", _set("schema", "1"), r"detections: field 'schema' must be an integer, got str"),
    ("detections", _delete("seq"), r"detections: field 'seq' is missing"),
    ("detections", _set("seq", -1), r"detections: field 'seq' must be >= 0"),
    ("detections", _set("seq", True), r"detections: field 'seq' must be an integer, got bool"),
    ("detections", _set("frame_ns", 1.5), r"detections: field 'frame_ns' must be an integer, got float"),
    ("detections", _set("diag.model_id", 3), r"detections: field 'diag.model_id' must be a string"),
    ("detections", _set("diag.cameras", ["a", 1, "c"]), r"detections: field 'diag.cameras' must be a list of str"),
    ("detections", _set("diag.capture_ns", [1, 2, 3]),
     r"detections: field 'diag.capture_ns' must be binary \(msgpack bin\), got list"),
    ("detections", _set("diag.capture_ns", bytes(16)),
     r"detections: field 'diag.capture_ns' has 16 bytes, 3 int64 values need 24"),
    ("detections", _set("diag.dropped_frames", msgpack.ExtType(1, bytes(24))),
     r"detections: field 'diag.dropped_frames' is msgpack ext type 1: no field is an ext type"),
    ("detections", _set("future_field", msgpack.ExtType(7, b"")),  # empty, unknown key: still not a valid message
     r"detections: field 'future_field' is msgpack ext type 7: no field is an ext type"),
    ("detections", _set("diag.cameras", ["a", msgpack.ExtType(3, b"x")]),
     r"detections: field 'diag.cameras\[1\]' is msgpack ext type 3"),
    ("detections", _set("diag.stage_ns.engine", "fast"), r"detections: field 'diag.stage_ns.engine' must be an int"),
    ("detections", _set("diag", [1]), r"detections: field 'diag' must be a map, got list"),
    ("detections", _set("objects", {"box": b""}),
     r"detections: field 'objects' must be binary \(msgpack bin\), got dict"),
    ("detections", _delete("objects"), r"detections: field 'objects' is missing"),
    ("detections", _set("objects", b"\0" * 399),
     r"detections: field 'objects' has 399 bytes, not a whole number of 80-byte records"),
    ("detections", _set_object(1, "camera", 3),
     r"detections: field 'objects.camera' has an index outside the 3 cameras"),
    ("detections", _set_object(1, "cls", -1), r"detections: field 'objects.cls' has an index outside the 4 classes"),
    ("detections", _set_object(3, "range_source", 9),
     r"detections: field 'objects.range_source' has a value outside 0..3"),
    ("detections", _set_byte(80 * 2 + 73, 2), r"detections: field 'objects.coasting' has a byte other than 0 or 1"),
    ("detections", _set_object(0, "score", 1.5), r"detections: field 'objects.score' has a value above 1"),
    ("detections", _set_object(4, "score", -0.1), r"detections: field 'objects.score' has a value below 0"),
    ("detections", _set_object(4, "score", np.nan),
     r"detections: field 'objects.score' has a value below 0 or NaN"),
    ("detections", _set_object(2, "box", (np.nan, 0, 10, 10)),
     r"detections: field 'objects.box' has a coordinate below -0.5 or NaN"),
    ("detections", _set_object(2, "box", (-3, 0, 10, 10)),
     r"detections: field 'objects.box' has a coordinate below -0.5"),
    ("detections", _set_object(2, "box", (0, 0, np.inf, 10)),
     r"detections: field 'objects.box' has an infinite or NaN"),
    ("detections", _set_object(2, "box", (10, 0, 10, 10)),
     r"detections: field 'objects.box' has a box with x0 >= x1"),
    ("detections", _set_object(2, "box", (0, 20, 10, 10)),
     r"detections: field 'objects.box' has a box with y0 >= y1"),
    ("detections", _set_object(1, "age_s", -1),
     r"detections: field 'objects.age_s' has a negative or NaN value"),
    ("detections", _set_object(1, "age_s", np.inf),
     r"detections: field 'objects.age_s' has an infinite or NaN value"),
    ("detections", _set("stale", b"\0\2\0"), r"detections: field 'stale' has a byte other than 0 or 1"),
    ("detections", _set("stale", b"\0\0"), r"detections: field 'stale' has 2 bytes, 3 bool values need 3"),
    ("hints", _set("brake", "slam"), r"hints: field 'brake' must be one of none, prepare, brake, got 'slam'"),
    ("hints", _set("lead.gap_m", "far"), r"hints: field 'lead.gap_m' must be a number, got str"),
    ("hints", _set("lead", 5), r"hints: field 'lead' must be a map, got int"),
    ("hints", _set("confidence", None), r"hints: field 'confidence' must be a number, got NoneType"),
    ("hints", _set("cut_in_ids", bytes(12)),
     r"hints: field 'cut_in_ids' has 12 bytes, not a whole number of 8-byte int64 values"),
    ("hints", _set("cut_in_ids", [3, 4]), r"hints: field 'cut_in_ids' must be binary \(msgpack bin\), got list"),
    ("health", _set("state", "meh"), r"health: field 'state' must be one of ok, degraded, fault"),
    ("health", _set("camera_states", ["ok", "ok"]), r"health: field 'camera_states' has 2 states for 3 cameras"),
    ("health", _set("camera_states", ["ok", "ok", "gone"]), r"health: field 'camera_states' values must be one of"),
    ("health", _set("reasons", "camera lost"), r"health: field 'reasons' must be a list of strings, got str"),
    ("health", _set("bad_frames", -3), r"health: field 'bad_frames' must be >= 0"),
]


@pytest.mark.parametrize("topic,mutate,error", BAD_FIELDS, ids=[f"{t}-{e[:40]}" for t, _, e in BAD_FIELDS])
def test_bad_field_names_topic_and_field(topic, mutate, error):
    frame = encode({"detections": sample_detections, "hints": sample_hints, "health": sample_health}[topic](), 0, 0)
    with pytest.raises(MessageError, match=error):
        decode(repack(frame, mutate))


def test_too_many_objects_is_rejected():
    # Payloads within the byte limit but above MAX_OBJECTS (hand-made: the builder cannot exceed them).
    n = MAX_OBJECTS + 1
    columns = {"cut_in_ids": np.arange(n, dtype="<i8").tobytes()}
    with pytest.raises(MessageError, match="hints: field 'cut_in_ids' has 4097 ids, the limit is 4096"):
        decode(repack(encode(sample_hints(), 0, 0), lambda d: d.update(columns)))
    table = {"objects": sample_objects(n).to_records().tobytes()}
    with pytest.raises(MessageError, match="detections: field 'objects' has 4097 objects, the limit is 4096"):
        decode(repack(encode(sample_detections(), 0, 0), lambda d: d.update(table)))


def test_values_the_node_publishes_decode():
    """The edge values of the checks are valid: a box from the image's first pixel edge, score 0 and 1, age 0,
    NaN range, position and velocity (no range source), inf / NaN TTC, the largest float32 box corner."""
    o = sample_objects(4)
    o.box[0] = (-0.5, -0.5, np.finfo(np.float32).max, 0.0)
    o.score[:2] = (0.0, 1.0)
    o.age_s[0] = 0.0
    o.range_m[1], o.position[1], o.velocity[1], o.ttc_s[1:3] = np.nan, np.nan, np.nan, (np.nan, np.inf)
    got = decode(encode(DetectionsMessage(sample_diag(), 1, [False] * 3, CLASSES, o), 0, 0)).message
    assert_same_objects(got.objects, o)


@pytest.mark.parametrize("frame,error", [
    (b"", r"message without a known topic prefix"),
    (b"no-separator-at-all-in-this-message", r"message without a known topic prefix"),
    (b"lidar\0\x80", r"message with unknown topic 'lidar'"),
    (b"hints\0", r"hints: payload is not valid msgpack"),
    (b"hints\0\xc1", r"hints: payload is not valid msgpack"),
    (b"hints\0\x81\xa1a", r"hints: payload is not valid msgpack"),                      # truncated
    (b"hints\0\x80\x80", r"hints: payload is not valid msgpack.*extra data"),
    (b"hints\0\x91" * 1 + b"\x91" * 5000 + b"\x01", r"hints: payload is not valid msgpack"),  # nesting depth
    (b"hints\0\x81\x01\x01", r"hints: payload is not valid msgpack.*map key"),            # strict_map_key
    (b"hints\0\xdc\x10\x00" + b"\x01" * 4096, r"hints: payload is not valid msgpack.*max_array_len"),
    (b"hints\0\xda\x10\x00" + b"a" * 4096, r"hints: payload is not valid msgpack.*max_str_len"),
    (b"hints\0\x93\x01\x02\x03", r"hints: payload must be a map, got list"),
    (b"hints\0" + b"\0" * (SERVICES["hints"].max_bytes - 5), r"hints: message of 65537 bytes exceeds the limit"),
])
def test_malformed_frames(frame, error):
    with pytest.raises(MessageError, match=error):
        decode(frame)


def test_oversized_binary_is_refused_before_it_is_decoded():
    limit = SERVICES["health"].max_bytes
    frame = topic_prefix("health") + msgpack.packb({"schema": 1, "blob": b"x" * (limit + 10)})
    with pytest.raises(MessageError, match="health: message of .* exceeds the limit"):
        decode(frame)


def test_random_corruption_only_raises_message_error():
    rng = np.random.default_rng(1)
    frames = [encode(sample_detections(4), 0, 0), encode(sample_hints(), 0, 0), encode(sample_health(), 0, 0)]
    rejected = 0
    for i in range(3000):
        frame = bytearray(frames[i % 3])
        for _ in range(int(rng.integers(1, 4))):
            frame[int(rng.integers(0, len(frame)))] = int(rng.integers(0, 256))
        if rng.random() < 0.2:
            frame = frame[: int(rng.integers(0, len(frame)))]
        try:
            decode(bytes(frame))
        except MessageError:
            rejected += 1
    assert rejected > 1000  # most corruptions are caught; none escapes as another exception


def test_every_service_has_a_schema():
    assert set(SERVICES) >= {"detections", "hints", "health"}
    assert SERVICES["health"].rate_hz == 2.0 and not SERVICES["health"].per_frame_set
    assert SERVICES["detections"].per_frame_set and SERVICES["hints"].per_frame_set
    for topic, make in (("detections", sample_detections), ("hints", sample_hints), ("health", sample_health)):
        assert decode(encode(make(), 0, 0)).topic == topic
    assert RangeSource(3) is RangeSource.FUSED


def test_numpy_scalars_are_accepted_and_long_reasons_clipped():
    diag = Diagnostics("m", ["front"], np.array([5]), np.array([0]), {"engine": np.int64(7)})
    hints = HintsMessage(diag, np.int64(5), WireLead(np.int64(3), np.float32(20.5), np.float32(-1.0), np.float32(np.inf)),
                         "brake", np.float32(3.0), np.float64(9.0), np.array([3], np.int32), np.float32(0.5))
    got = decode(encode(hints, 0, 0)).message
    assert got.lead == WireLead(3, 20.5, -1.0, math.inf) and got.diag.stage_ns == {"engine": 7} and got.frame_ns == 5
    health = HealthMessage(diag, "fault", ["engine error: " + "x" * 5000], ["lost"], np.float32(1), 2, 3, 0, 0, 0)
    reason = decode(encode(health, 0, 0)).message.reasons[0]
    assert reason.startswith("engine error: xxx") and reason.endswith("…") and len(reason.encode()) <= 1024
    with pytest.raises(ValueError, match="HealthMessage.reasons"):
        HealthMessage(diag, "fault", "engine error", ["lost"], 1, 2, 3, 0, 0, 0)
    with pytest.raises(ValueError, match="longer than 1024 bytes"):
        Diagnostics("m" * 2000, ["front"], [0], [0])


@pytest.mark.parametrize("stage_ns", [{b"engine": "x"}, {b"engine": 5}, {b"e" * 2000: 5}, {"engine": 5, b"x": 1}])
def test_map_keys_that_are_not_strings_are_rejected(stage_ns):
    """Issue 12 item 1: a bin key raised TypeError from the error path ({b"engine": "x"}), was accepted as
    the key "b'engine'" ({b"engine": 5}), or raised ValueError in Diagnostics (a bin key over 1 KB)."""
    frame = repack(encode(sample_hints(), 0, 0), lambda d: d["diag"].update(stage_ns=stage_ns))
    with pytest.raises(MessageError, match=r"^hints: field 'diag.stage_ns' has a key of type bytes .{0,60}; "
                                           r"keys must be strings$"):
        decode(frame)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(stage_ns=st.dictionaries(st.one_of(st.text(max_size=8), st.binary(max_size=8)),
                                st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=4), st.binary(max_size=4),
                                          st.floats(), st.none(), st.booleans()), max_size=4))
def test_any_stage_map_decodes_or_raises_message_error(stage_ns):
    frame = repack(encode(sample_hints(), 0, 0), lambda d: d["diag"].update(stage_ns=stage_ns))
    try:
        decoded = decode(frame).message.diag.stage_ns
    except MessageError as e:
        assert str(e).startswith("hints: field ") and "diag.stage_ns" in str(e)
    else:
        assert decoded == stage_ns and all(isinstance(k, str) and type(v) is int for k, v in decoded.items())
