"""Run files and drives open in any MCAP tool: every channel decodes from its own schema record alone
(protobuf descriptors, JSON schema, ros2msg), with no project code on the reading side."""

from __future__ import annotations

import json
import math

import jsonschema
import msgpack
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

from perception.io.run_file import load_run
from tests.test_replay_support import record, simulated_outputs, small_rig, write_drive


def _protobuf_class(schema):
    files = descriptor_pb2.FileDescriptorSet.FromString(schema.data)
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema.name))


def decode_by_schema(path) -> dict[str, list]:
    """topic -> decoded messages, using only each channel's schema record and message encoding."""
    ros2 = Ros2DecoderFactory()
    classes, out = {}, {}
    with open(path, "rb") as f:
        reader = make_reader(f)
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            enc = channel.message_encoding
            if enc == "protobuf":
                assert schema.encoding == "protobuf"
                cls = classes.setdefault(schema.id, _protobuf_class(schema))
                value = cls.FromString(message.data)
            elif enc == "json":
                assert schema.encoding == "jsonschema"
                value = json.loads(message.data)
                jsonschema.validate(value, json.loads(schema.data))
            elif enc == "cdr":
                assert schema.encoding == "ros2msg"
                value = ros2.decoder_for(enc, schema)(message.data)
            elif enc == "msgpack":   # the wire payloads: self-describing msgpack maps
                value = msgpack.unpackb(message.data)
            else:
                raise AssertionError(f"{channel.topic}: message encoding {enc!r} no generic tool decodes")
            out.setdefault(channel.topic, []).append((message.log_time, value))
    return out


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap", frames=8)


@pytest.fixture(scope="module")
def run(drive, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.mcap"
    return record(path, small_rig(), simulated_outputs(drive), drive, copy_inputs=True)


def test_a_drive_decodes_from_its_schemas(drive):
    topics = decode_by_schema(drive)
    for camera in small_rig().names:
        images = topics[f"/camera/{camera}/image"]
        assert len(images) == 8 and images[0][1].frame_id == camera and images[0][1].format == "jpeg"
        assert topics[f"/camera/{camera}/calibration"][0][1].width == 320
        gt = topics[f"/camera/{camera}/ground_truth"]
        assert len(gt) == 8 and gt[0][1]["camera"] == camera and gt[0][1]["objects"]


def test_a_run_decodes_from_its_schemas(run):
    rig = small_rig()
    topics = decode_by_schema(run)

    (t_tf, tf), = topics["/tf"]                      # the rig, once, at the run's first time
    assert t_tf == min(t for messages in topics.values() for t, _ in messages)
    assert [t.child_frame_id for t in tf.transforms] == list(rig.names)
    for transform, camera in zip(tf.transforms, rig.cameras):
        assert transform.parent_frame_id == "vehicle"
        T = camera.T_vehicle_camera
        assert (transform.translation.x, transform.translation.y, transform.translation.z) == pytest.approx(
            tuple(T[:3, 3]))
        q = transform.rotation
        assert q.x**2 + q.y**2 + q.z**2 + q.w**2 == pytest.approx(1.0)
        # the rotation maps the camera's optical axis (z) to the vehicle-frame direction T[:3, 2]
        x, y, z, w = q.x, q.y, q.z, q.w
        axis = (2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y))
        assert axis == pytest.approx(tuple(T[:3, 2]), abs=1e-9)

    detections = load_run(run).detections   # what the node published, to compare with (project reader)
    scenes = topics["/perception/scene"]
    assert [t for t, _ in scenes] == [m.t_ns for m in detections]
    for recorded, (_, scene) in zip(detections, scenes):
        objects = recorded.message.objects
        assert scene.deletions[0].type == 1   # ALL: each update replaces the previous frame set's objects
        placed = np.isfinite(objects.position).all(1)   # objects with no position have no place in 3D
        assert [e.id for e in scene.entities] == [f"track/{i}" for i in objects.track_id[placed]]
        for entity, position in zip(scene.entities, objects.position[placed]):
            p = entity.cubes[0].pose.position
            assert (p.x, p.y, p.z) == pytest.approx(tuple(position.tolist()))
        for entity in scene.entities:
            assert entity.frame_id == "vehicle" and entity.id.startswith("track/")
            assert len(entity.cubes) == 1 and len(entity.texts) == 1
            assert f"#{entity.id.split('/')[1]}" in entity.texts[0].text
    labels = [e.texts[0].text for _, s in scenes for e in s.entities]
    assert any(" m" in text for text in labels) and any("TTC" in text for text in labels)
    colours = {(e.cubes[0].color.r, e.cubes[0].color.g, e.cubes[0].color.b) for _, s in scenes for e in s.entities}
    assert len(colours) >= 3   # one per class

    for camera in rig.names:
        annotations = topics[f"/camera/{camera}/annotations"]
        assert annotations and all(len(a.points) == len(a.texts) for _, a in annotations)
        assert sum(len(a.points) for _, a in annotations) > 0
        gt = topics[f"/camera/{camera}/ground_truth/annotations"]
        assert len(gt) == 8 and sum(len(a.points) for _, a in gt) > 0

    hints = topics["/perception/hints/json"]
    assert len(hints) == len(topics["/perception/hints"])
    assert {h["brake"] for _, h in hints} <= {"none", "prepare", "brake"}
    assert any(h["lead"] is not None for _, h in hints)
    health = topics["/perception/health/json"]
    assert len(health) == len(topics["/perception/health"])
    assert set(health[0][1]["cameras"]) == set(rig.names)
    assert all(math.isfinite(h["latency_p50_ms"] or 0.0) for _, h in health)

    truth = [m for camera in rig.names for m in topics[f"/camera/{camera}/ground_truth/scene"]]
    assert truth and all(e.id.startswith("gt/") and e.frame_id == "vehicle" for _, s in truth for e in s.entities)

    # the copied drive channels decode too (images, calibration, ground truth JSON)
    assert len(topics[f"/camera/{rig.names[0]}/image"]) == 8


def test_a_run_carries_autoware_and_vision_msgs(run):
    topics = decode_by_schema(run)
    detections = load_run(run).detections
    objects = topics["/perception/objects"]
    assert [t for t, _ in objects] == [m.t_ns for m in detections]
    for recorded, (t_ns, msg) in zip(detections, objects):
        o = recorded.message.objects
        placed = np.isfinite(o.position).all(1)
        assert msg.header.frame_id == "vehicle"
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t_ns
        assert [int.from_bytes(bytes(x.object_id.uuid[:8]), "little", signed=True) for x in msg.objects] == \
            o.track_id[placed].tolist()
        for x, position, cls in zip(msg.objects, o.position[placed], o.cls[placed]):
            p = x.kinematics.pose_with_covariance.pose.position
            assert (p.x, p.y, p.z) == pytest.approx(tuple(position.tolist()))
            label = {"car": 1, "truck": 2, "cyclist": 6, "pedestrian": 7}[recorded.message.classes[cls]]
            assert x.classification[0].label == label
    for c, camera in enumerate(small_rig().names):
        arrays = topics[f"/camera/{camera}/detections_2d"]
        assert len(arrays) == len(detections)
        for recorded, (t_ns, msg) in zip(detections, arrays):
            o = recorded.message.objects
            mine = o.camera == c
            assert msg.header.frame_id == camera and t_ns == recorded.message.diag.capture_ns[c]
            assert [d.id for d in msg.detections] == [str(i) for i in o.track_id[mine]]
            for d, box in zip(msg.detections, o.box[mine]):
                assert d.bbox.center.position.x == pytest.approx((box[0] + box[2]) / 2, abs=1e-3)
                assert d.bbox.size_y == pytest.approx(box[3] - box[1], abs=1e-3)


@pytest.mark.slow
def test_a_run_recorded_by_perception_run_decodes_from_its_schemas(tmp_path):
    """The real node (bundled model) on a small synthetic drive, `perception run --record`."""
    from perception.cli import main
    from replay.synth import cached_drive

    drive = cached_drive(seed=5, seconds=1.0, fps=10.0, num_cameras=3, scenario="lead_brake", width=320,
                         height=180)
    out = tmp_path / "run.mcap"
    assert main(["run", "--drive", str(drive), "--pacing", "lockstep", "--quiet", "--record", str(out),
                 "--endpoint", f"ipc://{tmp_path}/node"]) == 0
    topics = decode_by_schema(out)
    cameras = ("front", "front_left", "front_right")
    expected = {"/tf", "/perception/scene", "/perception/objects", "/perception/hints/json",
                "/perception/health/json", "/perception/detections", "/perception/hints", "/perception/health"}
    expected |= {f"/camera/{c}/{t}" for c in cameras
                 for t in ("annotations", "detections_2d", "ground_truth/annotations", "ground_truth/scene")}
    assert set(topics) == expected
    assert len(topics["/perception/scene"]) == len(topics["/perception/detections"]) == 10
    assert sum(len(s.entities) for _, s in topics["/perception/scene"]) > 0
