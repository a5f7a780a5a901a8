"""Recording the node's outputs into a run file (layout: replay/run_file.py, docs/replay.md).

    with RunRecorder("run.mcap", rig, drive_path="drive.mcap") as recorder:
        for message in node_outputs:          # DetectionsMessage / HintsMessage / HealthMessage
            recorder.write(message)

Each message is stored as its msgpack wire payload (`codec.encode`), at its frame time from the drive, never
at wall time, and also as messages any tool decodes from their own schemas (perception/io/foxglove_out.py,
docs/foxglove.md): detections as a Foxglove `SceneUpdate` and `ImageAnnotations` per camera, hints and
health as JSON, the rig as `FrameTransforms` (once, at the run's first time), and the drive's ground truth
(when the drive has some) as its own scene and annotations; detections also as ROS 2 / Autoware messages
(perception/io/ros2_out.py). `copy_inputs=True` copies the drive's channels
(images, calibration, ground truth, ego) into the run, which then opens as a drive on its own; otherwise
the run names the drive in its `perception.run` metadata record.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.message import Message as ProtobufMessage
from mcap.decoder import DecoderFactory
from mcap.records import Schema
from mcap_protobuf.schema import build_file_descriptor_set

from calib.rig import Rig
from perception.errors import ConfigError, DriveError, MessageError
from perception.messaging.codec import decode, encode
from perception.messaging.schemas import TOPIC_OF, DetectionsMessage, Envelope, HintsMessage, Message
from perception.messaging.services import topic_prefix
from perception.io import foxglove_out as fox
from perception.io import ros2_out as ros2
from perception.io.drive import DriveReader
from perception.io.drive_mcap import McapFile
from perception.io.mcap_writer import MAX_LOG_TIME_NS, McapFileWriter
from perception.io.run_file import (
    MESSAGE_ENCODING, OUTPUT_TOPICS, RUN_FORMAT, RUN_METADATA, derived_topics, message_time, schema_name,
)


class RunRecorder(McapFileWriter):
    """Writes a run file. `write(message)` for every message the node publishes, in the order it publishes
    them; `close()` (or leaving the `with` block) finishes the file.

    Each message gets a per-topic `seq` from 0 and `publish_ns = clock()` (wall time, used for latency
    diagnostics only: compare and the determinism check ignore it; pass `clock=lambda: 0` for
    byte-identical files from identical outputs).
    """

    def __init__(self, path: str | Path, rig: Rig, *, drive_path: str | Path | None = None,
                 copy_inputs: bool = False, clock: Callable[[], int] = time.time_ns,
                 chunk_size: int = 4 * 2**20):
        if copy_inputs and drive_path is None:
            raise ConfigError(f"{path}: copy_inputs needs the drive_path to copy from")
        self._clock = clock
        self._seq = {topic: 0 for topic in OUTPUT_TOPICS}
        self._last_ns: dict[str, int] = {}
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._start_ns: int | None = None   # earliest log time written so far (inputs, ground truth)
        self._transforms_written = False
        super().__init__(path, rig, what="run recorder", chunk_size=chunk_size)
        with self._closing_on_error():
            info = {"format": RUN_FORMAT, "inputs": "copied" if copy_inputs else "referenced" if drive_path else "none"}
            if drive_path is not None:
                info["drive"] = os.path.relpath(Path(drive_path).resolve(), self.path.resolve().parent)
            self._mcap.add_metadata(RUN_METADATA, info)
            if copy_inputs:
                self._copy_inputs(Path(drive_path))  # type: ignore[arg-type]
            if drive_path is not None:
                self._write_ground_truth(Path(drive_path))

    def write(self, message: Message, *, publish_ns: int | None = None) -> None:
        """Records one message the node produced (stamped here with the next seq and `publish_ns`, default
        `clock()`)."""
        if type(message) not in TOPIC_OF:
            raise TypeError(f"RunRecorder.write takes a node message, got {type(message).__name__}")
        topic = TOPIC_OF[type(message)]
        publish_ns = self._clock() if publish_ns is None else publish_ns
        try:
            frame = encode(message, self._seq[topic], publish_ns)
        except MessageError as e:
            raise DriveError(f"{self.path}: cannot record: {e}") from None
        self._record(Envelope(topic, self._seq[topic], publish_ns, message), frame)

    def write_wire(self, frame: bytes) -> None:
        """Records one message exactly as it went over ZeroMQ (`topic\\0msgpack`, e.g. from a subscriber),
        keeping its seq and publish_ns; it is decoded (and so checked) first."""
        try:
            envelope = decode(frame)
        except MessageError as e:
            raise DriveError(f"{self.path}: cannot record: {e}") from None
        self._record(envelope, frame)

    def _record(self, envelope: Envelope, frame: bytes) -> None:
        self._check_open()
        topic, message = envelope.topic, envelope.message
        for camera in message.diag.cameras:
            if camera not in self.rig:
                raise DriveError(f"{self.path}: {topic} names camera {camera!r}, which is not in the rig "
                                 f"({', '.join(self.rig)})")
        t_ns = message_time(message)
        if t_ns < 0:  # health before any camera frame (e.g. every camera lost): it belongs to the time so far
            t_ns = max(self._last_ns.values(), default=0)
        if not 0 <= t_ns <= MAX_LOG_TIME_NS:
            raise DriveError(f"{self.path}: {topic} time {t_ns} ns is outside 0..2^64-1")
        last = self._last_ns.get(topic)
        if last is not None and (t_ns < last or (t_ns == last and topic != "health")):
            raise DriveError(f"{self.path}: {topic} at {t_ns} ns is not after the previous one at {last} ns "
                             "(the node publishes in frame-set order)")
        self._last_ns[topic] = t_ns
        if not self._transforms_written:
            self._transforms_written = True
            start = t_ns if self._start_ns is None else min(self._start_ns, t_ns)
            self._write_proto(fox.TRANSFORMS_TOPIC, start, fox.frame_transforms(self.rig, start))
        channel = self._channel(OUTPUT_TOPICS[topic], schema_name(topic), "", lambda: b"", MESSAGE_ENCODING)
        self._mcap.add_message(channel, log_time=t_ns, publish_time=t_ns, data=frame[len(topic_prefix(topic)):])
        self._seq[topic] = envelope.seq + 1
        if isinstance(message, DetectionsMessage):
            self._write_proto(fox.SCENE_TOPIC, t_ns, fox.scene_update(message))
            for camera, (capture_ns, boxes) in fox.image_annotations(message).items():
                self._write_proto(fox.annotations_topic(camera), capture_ns, boxes)
            self._write_ros2(ros2.OBJECTS_TOPIC, t_ns, ros2.TRACKED_OBJECTS, ros2.tracked_objects(message))
            for camera, (capture_ns, data) in ros2.detection_2d_arrays(message).items():
                self._write_ros2(ros2.detections_2d_topic(camera), capture_ns, ros2.DETECTION_2D_ARRAY, data)
        elif isinstance(message, HintsMessage):
            self._write_json(fox.HINTS_JSON_TOPIC, t_ns, fox.hints_json(message), fox.HINTS_SCHEMA)
        else:
            self._write_json(fox.HEALTH_JSON_TOPIC, t_ns, fox.health_json(message), fox.HEALTH_SCHEMA)

    def _write_proto(self, topic: str, t_ns: int, message: ProtobufMessage) -> None:
        cls = type(message)
        channel = self._channel(topic, cls.DESCRIPTOR.full_name, "protobuf",
                                lambda: build_file_descriptor_set(cls).SerializeToString(), "protobuf")
        self._add(channel, t_ns, message.SerializeToString())

    def _write_json(self, topic: str, t_ns: int, data: bytes, schema: dict) -> None:
        channel = self._channel(topic, schema["title"], "jsonschema", lambda: json.dumps(schema).encode(), "json")
        self._add(channel, t_ns, data)

    def _write_ros2(self, topic: str, t_ns: int, schema: str, data: bytes) -> None:
        channel = self._channel(topic, schema, "ros2msg", lambda: ros2.SCHEMAS[schema].encode(), "cdr")
        self._add(channel, t_ns, data)

    def _add(self, channel: int, t_ns: int, data: bytes) -> None:
        self._start_ns = t_ns if self._start_ns is None else min(self._start_ns, t_ns)
        self._mcap.add_message(channel, log_time=t_ns, publish_time=t_ns, data=data)

    def _write_ground_truth(self, drive_path: Path) -> None:
        """The drive's labels as a scene and box annotations; drives without labels (or that are not MCAP
        drives, e.g. ROS 2 bags and videos) add nothing."""
        try:
            drive = DriveReader(drive_path)
        except DriveError:
            return
        try:
            for gt in drive.ground_truth():
                if gt.camera in self.rig:
                    self._write_proto(fox.ground_truth_scene_topic(gt.camera), gt.t_ns, fox.ground_truth_scene(gt))
                    self._write_proto(fox.ground_truth_annotations_topic(gt.camera), gt.t_ns,
                                      fox.ground_truth_annotations(gt))
        finally:
            drive.close()

    def _copy_inputs(self, drive_path: Path) -> None:
        """Every channel of the drive, byte for byte (not the outputs of an earlier run in it)."""
        drive = McapFile(drive_path, (_KeepBytes(),))
        try:
            ours = derived_topics(self.rig)
            topics = [t for t in drive.channels if t not in ours]
            for channel, message, data in drive.messages(topics):
                schema = drive.schema(channel)
                channel_id = self._copied_channel(channel.topic, channel.message_encoding, schema,
                                                  dict(channel.metadata))
                self._start_ns = message.log_time if self._start_ns is None else min(self._start_ns,
                                                                                      message.log_time)
                self._mcap.add_message(channel_id, log_time=message.log_time, publish_time=message.publish_time,
                                       data=data)
        finally:
            drive.close()

    def _copied_channel(self, topic: str, encoding: str, schema: Schema | None, metadata: dict[str, str]) -> int:
        channel = self._channels.get(topic)
        if channel is None:
            schema_id = 0
            if schema is not None:
                key = f"{schema.name}\0{schema.encoding}\0{schema.data.hex()}"
                if key not in self._schemas:
                    self._schemas[key] = self._mcap.register_schema(schema.name, schema.encoding, schema.data)
                schema_id = self._schemas[key]
            channel = self._channels[topic] = self._mcap.register_channel(topic, encoding, schema_id, metadata)
        return channel

    def _channel(self, topic: str, schema: str, schema_encoding: str, schema_data: Callable[[], bytes],
                 message_encoding: str) -> int:
        channel = self._channels.get(topic)
        if channel is None:
            if schema not in self._schemas:
                self._schemas[schema] = self._mcap.register_schema(schema, schema_encoding, schema_data())
            channel = self._channels[topic] = self._mcap.register_channel(topic, message_encoding,
                                                                          self._schemas[schema], {})
        return channel


class _KeepBytes(DecoderFactory):
    def decoder_for(self, message_encoding: str, schema: Schema | None) -> Callable[[bytes], Any]:
        return bytes
