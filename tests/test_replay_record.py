"""Run files: the recorder's layout (wire payloads, drive times, Foxglove annotations, copied or referenced
inputs) and the reader's checks on untrusted files."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations
from foxglove_schemas_protobuf.PointsAnnotation_pb2 import PointsAnnotation
from mcap.reader import make_reader
from mcap.writer import Writer as McapWriter

from calib.rig import rig_to_yaml_str
from perception.errors import ConfigError, DriveError
from perception.messaging.codec import encode
from perception.messaging.schemas import DetectionsMessage, Diagnostics, HealthMessage, HintsMessage
from perception.io.drive import DriveReader
from perception.io.drive_mcap import TruncatedDriveWarning
from perception.io.record import RunRecorder
from perception.io.run_file import OUTPUT_TOPICS, RunReader, annotations_topic, load_run, schema_name
from tests.test_replay_support import T0, record, simulated_outputs, small_rig, write_drive


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap", frames=12)


@pytest.fixture(scope="module")
def outputs(drive):
    return simulated_outputs(drive)


def _raw(path):
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        messages = [(channel.topic, message.log_time, message.publish_time, bytes(message.data))
                    for _, channel, message in reader.iter_messages(log_time_order=False)]
    return summary, messages


def test_messages_are_stored_as_wire_payloads_at_drive_time(drive, outputs, tmp_path):
    path = record(tmp_path / "run.mcap", small_rig(), outputs, drive)
    summary, raw = _raw(path)
    schemas = {c.topic: (c.message_encoding, summary.schemas[c.schema_id].name) for c in summary.channels.values()}
    for topic, channel in OUTPUT_TOPICS.items():
        assert schemas[channel] == ("msgpack", schema_name(topic))
    seq = {"detections": 0, "hints": 0, "health": 0}
    stored = [(t, log, pub, data) for t, log, pub, data in raw if t in OUTPUT_TOPICS.values()]
    assert len(stored) == len(outputs)
    for message, (topic, log_time, publish_time, data) in zip(outputs, stored):
        name = {DetectionsMessage: "detections", HintsMessage: "hints", HealthMessage: "health"}[type(message)]
        assert topic == OUTPUT_TOPICS[name]
        wire = encode(message, seq[name], 0)
        assert data == wire[len(name) + 1:]   # the msgpack payload after "topic\0", byte for byte
        expected_t = message.frame_ns if name != "health" else int(message.diag.capture_ns.max())
        assert log_time == publish_time == expected_t
        seq[name] += 1
    run = load_run(path)
    assert [m.envelope.seq for m in run.detections] == list(range(12))
    assert run.info == {"format": "perception.run.v1", "inputs": "referenced",
                        "drive": f"../{drive.parent.name}/drive.mcap"}   # relative: the pair can move together
    assert run.drive_path.resolve() == drive.resolve() and not run.has_inputs


def test_foxglove_annotations_per_camera(drive, outputs, tmp_path):
    rig = small_rig()
    path = record(tmp_path / "run.mcap", rig, outputs, drive)
    _, raw = _raw(path)
    detections = [m for m in outputs if isinstance(m, DetectionsMessage)]
    for c, camera in enumerate(rig.names):
        annotations = [(log, data) for topic, log, _, data in raw if topic == annotations_topic(camera)]
        assert len(annotations) == len(detections)
        for message, (log_time, data) in zip(detections, annotations):
            decoded = ImageAnnotations.FromString(data)
            assert log_time == message.diag.capture_ns[c]
            rows = np.flatnonzero(message.objects.camera == c)
            assert len(decoded.points) == len(decoded.texts) == len(rows)
            for i, points, text in zip(rows, decoded.points, decoded.texts):
                assert points.type == PointsAnnotation.LINE_LOOP and len(points.points) == 4
                assert points.timestamp.ToNanoseconds() == log_time
                x0, y0, x1, y1 = message.objects.box[i]
                assert (points.points[0].x, points.points[0].y, points.points[2].x, points.points[2].y) == \
                    pytest.approx((x0, y0, x1, y1))
                assert text.text.startswith(f"{message.classes[message.objects.cls[i]]} #{message.objects.track_id[i]}")


def test_stale_cameras_get_no_second_annotation(drive, outputs, tmp_path):
    rig = small_rig()
    first = next(m for m in outputs if isinstance(m, DetectionsMessage))
    stale = DetectionsMessage(first.diag, first.frame_ns, [False, True], first.classes, first.objects)
    path = tmp_path / "run.mcap"
    with RunRecorder(path, rig) as recorder:
        recorder.write(stale)
    _, raw = _raw(path)
    assert [t for t, *_ in raw].count(annotations_topic(rig.names[1])) == 0
    assert [t for t, *_ in raw].count(annotations_topic(rig.names[0])) == 1


def test_copied_inputs_make_the_run_a_drive(drive, outputs, tmp_path):
    rig = small_rig()
    path = record(tmp_path / "run.mcap", rig, outputs, drive, copy_inputs=True)
    run = load_run(path)
    assert run.has_inputs and run.info["inputs"] == "copied"
    with DriveReader(path) as copied, DriveReader(drive) as original:
        assert copied.rig == original.rig
        ours = [(f.camera, f.t_ns, f.frame.data.tobytes()) for f in copied.frames()]
        theirs = [(f.camera, f.t_ns, f.frame.data.tobytes()) for f in original.frames()]
        assert ours == theirs and len(ours) == 24
        assert list(copied.ground_truth()) == list(original.ground_truth())
    assert len(run.detections) == 12


def test_recorder_refuses_bad_input(drive, outputs, tmp_path):
    rig = small_rig()
    detections = [m for m in outputs if isinstance(m, DetectionsMessage)]
    with RunRecorder(tmp_path / "a.mcap", rig) as recorder:
        recorder.write(detections[1])
        with pytest.raises(DriveError, match=r"detections at 1700000000000000000 ns is not after the previous one"):
            recorder.write(detections[0])
        with pytest.raises(DriveError, match="detections at 1700000000100000000 ns is not after"):
            recorder.write(detections[1])
        diag = Diagnostics("m", ("front", "rear_cam"), [T0, T0], [0, 0], {})
        with pytest.raises(DriveError, match="names camera 'rear_cam', which is not in the rig"):
            recorder.write(HintsMessage(diag, T0 + 10**9, None, "none", math.inf, math.inf, [], 1.0))
        never = Diagnostics("m", rig.names, [-1, -1], [0, 0], {})   # no frame yet: at the latest time so far
        recorder.write(HealthMessage(never, "fault", ("no camera",), ("lost", "lost"), 0, 0, 0, 0, 0, 0))
        with pytest.raises(TypeError, match="takes a node message"):
            recorder.write("detections")  # type: ignore[arg-type]
    with pytest.raises(DriveError, match="recorder is closed"):
        recorder.write(detections[5])
    assert [m.t_ns for m in load_run(tmp_path / "a.mcap").health] == [detections[1].frame_ns]
    with RunRecorder(tmp_path / "first.mcap", rig) as recorder:
        recorder.write(HealthMessage(never, "fault", ("no camera",), ("lost", "lost"), 0, 0, 0, 0, 0, 0))
    assert [m.t_ns for m in load_run(tmp_path / "first.mcap").health] == [0]
    with pytest.raises(ConfigError, match="copy_inputs needs the drive_path"):
        RunRecorder(tmp_path / "b.mcap", rig, copy_inputs=True)
    with pytest.raises(DriveError, match="cannot create"):
        RunRecorder(tmp_path / "missing" / "c.mcap", rig)


def test_a_recording_is_on_disk_from_its_start_and_a_failed_start_leaves_no_file(outputs, tmp_path, monkeypatch):
    import perception.io.mcap_writer as mcap_writer

    rig = small_rig()
    recorder = RunRecorder(tmp_path / "live.mcap", rig)
    recorder.write(outputs[0])
    # not closed (as when the process is killed): the header and the rig are already in the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedDriveWarning)
        with RunReader(tmp_path / "live.mcap") as reader:
            assert reader.rig.names == rig.names
    recorder.close()

    def interrupted(_rig):  # Ctrl-C / SIGTERM while the file is being started
        raise KeyboardInterrupt

    monkeypatch.setattr(mcap_writer, "rig_to_yaml_str", interrupted)
    with pytest.raises(KeyboardInterrupt):
        RunRecorder(tmp_path / "cut.mcap", rig)
    assert not (tmp_path / "cut.mcap").exists()


def test_write_wire_keeps_seq_and_publish_time(drive, outputs, tmp_path):
    rig = small_rig()
    frame = encode(outputs[0], 41, 1_234)
    with RunRecorder(tmp_path / "run.mcap", rig) as recorder:
        recorder.write_wire(frame)
        with pytest.raises(DriveError, match="cannot record: message without a known topic prefix"):
            recorder.write_wire(b"garbage")
    run = load_run(tmp_path / "run.mcap")
    assert (run.detections[0].envelope.seq, run.detections[0].envelope.publish_ns) == (41, 1_234)


def _handmade_run(path, rig, data: bytes, schema: str = schema_name("detections"), log_time: int = T0):
    with open(path, "wb") as f:
        writer = McapWriter(f)
        writer.start()
        writer.add_attachment(0, 0, "rig.yaml", "application/yaml", rig_to_yaml_str(rig).encode())
        schema_id = writer.register_schema(schema, "", b"")
        channel = writer.register_channel("/perception/detections", "msgpack", schema_id)
        writer.add_message(channel, log_time=log_time, publish_time=log_time, data=data)
        writer.finish()
    return path


def test_reader_checks_untrusted_runs(drive, outputs, tmp_path):
    rig = small_rig()
    payload = encode(outputs[0], 0, 0)[len("detections\0"):]
    assert len(load_run(_handmade_run(tmp_path / "ok.mcap", rig, payload)).detections) == 1
    with pytest.raises(DriveError, match=r"bad\.mcap: /perception/detections @ log time 1700000000000000000: "
                                         r"detections: payload is not valid msgpack"):
        load_run(_handmade_run(tmp_path / "bad.mcap", rig, payload[:-5]))
    with pytest.raises(DriveError, match="schema 'perception.detections.v9'; this reader supports"):
        load_run(_handmade_run(tmp_path / "v9.mcap", rig, payload, schema="perception.detections.v9"))
    with pytest.raises(DriveError, match="frame_ns 1700000000000000000 differs from the log time"):
        load_run(_handmade_run(tmp_path / "time.mcap", rig, payload, log_time=T0 + 1))
    (tmp_path / "text.mcap").write_text("not a run")
    with pytest.raises(DriveError, match="not an MCAP file"):
        RunReader(tmp_path / "text.mcap")
    with pytest.raises(DriveError, match="no output topic 'tracks'"):
        list(RunReader(tmp_path / "ok.mcap").messages(["tracks"]))


def test_truncated_run_reads_its_complete_chunks(drive, outputs, tmp_path):
    path = tmp_path / "run.mcap"
    with RunRecorder(path, small_rig(), clock=lambda: 0, chunk_size=4096) as recorder:
        for m in outputs:
            recorder.write(m)
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(cut)
    assert any(issubclass(w.category, TruncatedDriveWarning) for w in caught)
    complete = load_run(path)
    assert 0 < len(run.detections) < len(complete.detections)
    assert [m.t_ns for m in run.detections] == [m.t_ns for m in complete.detections[: len(run.detections)]]
    assert run.info == {} and run.rig == complete.rig


def test_a_damaged_run_metadata_index_is_a_drive_error(outputs, tmp_path):
    """The metadata index pointing into compressed chunk data once escaped as zstandard's ZstdError."""
    import struct

    from mcap.opcode import Opcode

    path = tmp_path / "run.mcap"
    with RunRecorder(path, small_rig(), drive_path=tmp_path / "drive.mcap") as recorder:
        for out in outputs[:5]:
            recorder.write(out)
    data = bytearray(path.read_bytes())
    summary_start = struct.unpack_from("<Q", data, len(data) - 8 - 4 - 8 - 8)[0]
    records, at = [], summary_start
    while data[at] != Opcode.FOOTER:
        records.append((data[at], at + 9))
        at += 9 + struct.unpack_from("<Q", data, at + 1)[0]
    chunk = next(struct.unpack_from("<Q", data, body + 16)[0] for op, body in records if op == Opcode.CHUNK_INDEX)
    (meta,) = [body for op, body in records if op == Opcode.METADATA_INDEX]
    struct.pack_into("<Q", data, meta, chunk)          # the metadata index points at a chunk ...
    data[chunk + 9 + 60] ^= 0xFF                       # ... whose compressed bytes are damaged
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DriveError, match=r"run\.mcap: unreadable perception\.run metadata"):
            load_run(path)
