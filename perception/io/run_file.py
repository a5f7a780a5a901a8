"""Run files: what the node published while replaying a drive, as one MCAP file (docs/replay.md).

Layout (written by replay/record.py, read here):
- attachment `rig.yaml`: the rig the node ran with (as in a drive);
- metadata record `perception.run`: `format`, `inputs` (`copied` | `referenced` | `none`) and `drive`
  (the drive's path relative to the run file's folder) when known;
- `/perception/<topic>` for `detections`, `hints`, `health`: message encoding `msgpack`, schema name
  `perception.<topic>.v<schema version>`; each message's data is the msgpack payload of the ZeroMQ
  message (`codec.encode` without its `topic\\0` prefix), log time = publish time = the message's frame
  time from the drive (`frame_ns`; for `health` the newest `diag.capture_ns`, or before any frame arrived
  the latest time recorded so far);
- the same outputs for any tool, decoded from their own schemas (perception/io/foxglove_out.py,
  docs/foxglove.md): `/perception/scene` (Foxglove `SceneUpdate`), `/camera/<name>/annotations`
  (`ImageAnnotations` of the boxes, at that camera's capture time), `/perception/hints/json` and
  `/perception/health/json` (JSON schema), `/tf` (`FrameTransforms` of the rig, at the run's first time),
  `/camera/<name>/ground_truth/scene` and `.../ground_truth/annotations` (the drive's labels, when it has some);
- ROS 2 (CDR, perception/io/ros2_out.py): `/perception/objects` (autoware_perception_msgs TrackedObjects)
  and `/camera/<name>/detections_2d` (vision_msgs Detection2DArray);
- with `inputs: copied` also the drive's own channels (images, calibration, ground truth, ego), so the run
  opens as a drive (`perception.io.drive.DriveReader`).

Reading treats the file as untrusted: payloads are decoded by `perception.messaging.codec.decode` (size and
msgpack limits, schema version, every field's type and shape) and checked against their channel's schema
name and log time; every failure is a DriveError naming the file, topic and log time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcap.decoder import DecoderFactory
from mcap.records import Schema

from calib.rig import Rig
from perception.errors import DriveError, MessageError
from perception.messaging.codec import decode
from perception.messaging.schemas import DetectionsMessage, Envelope, HintsMessage, Message
from perception.messaging.services import SERVICES, topic_prefix
from perception.io import foxglove_out as fox
from perception.io import ros2_out as ros2
from perception.io.drive import RIG_ATTACHMENT, image_topic
from perception.io.drive_mcap import McapFile, McapReader

RUN_FORMAT = "perception.run.v1"
RUN_METADATA = "perception.run"
MESSAGE_ENCODING = "msgpack"
OUTPUT_TOPICS: dict[str, str] = {topic: f"/perception/{topic}" for topic in SERVICES}
TOPIC_OF_CHANNEL: dict[str, str] = {channel: topic for topic, channel in OUTPUT_TOPICS.items()}


def schema_name(topic: str) -> str:
    return f"perception.{topic}.v{SERVICES[topic].schema_version}"


annotations_topic = fox.annotations_topic


def derived_topics(rig: Rig) -> set[str]:
    """Every topic a run's recorder writes (the rest of a run with copied inputs is the drive's)."""
    cameras = {t for c in rig for t in (fox.annotations_topic(c), fox.ground_truth_annotations_topic(c),
                                        fox.ground_truth_scene_topic(c), ros2.detections_2d_topic(c))}
    return set(OUTPUT_TOPICS.values()) | cameras | {
        fox.SCENE_TOPIC, fox.HINTS_JSON_TOPIC, fox.HEALTH_JSON_TOPIC, fox.TRANSFORMS_TOPIC,
        ros2.OBJECTS_TOPIC}


def message_time(message: Message) -> int:
    """The drive time a message belongs to: its frame-set time; for health the newest capture time used
    (-1 when no camera frame has arrived yet)."""
    if isinstance(message, (DetectionsMessage, HintsMessage)):
        return int(message.frame_ns)
    return int(message.diag.capture_ns.max()) if len(message.diag.capture_ns) else -1


@dataclass(frozen=True)
class RecordedMessage:
    """One recorded output: its topic (`detections`, `hints`, `health`), log time and decoded envelope."""
    topic: str
    t_ns: int
    envelope: Envelope

    @property
    def message(self) -> Message:
        return self.envelope.message


class RunReader(McapReader):
    """Reads a run file: the rig, the run's metadata and the recorded messages, decoded and checked."""

    def __init__(self, path: str | Path):
        self._mcap = McapFile(path, (_BytesDecoderFactory(),))
        try:
            self.rig = self._read_rig()
            self.info = self._read_info()
            self._check_channels()
        except BaseException:
            self._mcap.close()
            raise

    @property
    def has_inputs(self) -> bool:
        """The drive's images were copied into the run (it opens as a drive)."""
        return any(image_topic(c) in self._mcap.channels for c in self.rig)

    @property
    def drive_path(self) -> Path | None:
        """The drive this run was replayed from, as recorded (relative paths are resolved against the run
        file's folder); None when the run does not name one."""
        drive = self.info.get("drive")
        if not drive:
            return None
        return Path(drive) if os.path.isabs(drive) else self.path.parent / drive

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[RecordedMessage]:
        """Recorded messages of `topics` (default all three) with start_ns <= t < end_ns, in log-time order."""
        topics = list(SERVICES) if topics is None else list(topics)
        for topic in topics:
            if topic not in OUTPUT_TOPICS:
                raise DriveError(f"{self.path}: no output topic {topic!r} (topics: {', '.join(OUTPUT_TOPICS)})")
        channels = [OUTPUT_TOPICS[t] for t in topics]
        for channel, message, data in self._mcap.messages(channels, start_ns, end_ns):
            topic = TOPIC_OF_CHANNEL[channel.topic]
            where = self._mcap.where(channel, message)
            try:
                envelope = decode(topic_prefix(topic) + data)
            except MessageError as e:
                raise DriveError(f"{where}: {e}") from None
            if topic != "health" and envelope.message.frame_ns != message.log_time:
                raise DriveError(f"{where}: frame_ns {envelope.message.frame_ns} differs from the log time")
            yield RecordedMessage(topic, message.log_time, envelope)

    def _read_rig(self) -> Rig:
        return self._rig_attachment(RIG_ATTACHMENT, "the rig the node ran with; is this a run file?")

    def _read_info(self) -> dict[str, str]:
        """The `perception.run` metadata record; empty when the file has no readable summary (truncated)."""
        if not any(m.name == RUN_METADATA for m in self._mcap.summary.metadata_indexes):
            return {}
        return self._mcap.metadata(RUN_METADATA) or {}

    def _check_channels(self) -> None:
        for topic, channel in OUTPUT_TOPICS.items():
            found = self._mcap.channels.get(channel)
            if found is None:
                continue
            schema = self._mcap.schema(found)
            got = schema.name if schema is not None else None
            if found.message_encoding != MESSAGE_ENCODING or got != schema_name(topic):
                raise DriveError(f"{self.path}: {channel} carries {found.message_encoding!r} messages of schema "
                                 f"{got!r}; this reader supports {MESSAGE_ENCODING!r} {schema_name(topic)!r}")


@dataclass
class Run:
    """A whole run in memory: the rig, metadata and each topic's messages in time order."""
    path: Path
    rig: Rig
    info: dict[str, str]
    drive_path: Path | None
    has_inputs: bool
    detections: list[RecordedMessage] = field(default_factory=list)
    hints: list[RecordedMessage] = field(default_factory=list)
    health: list[RecordedMessage] = field(default_factory=list)

    def topic(self, topic: str) -> list[RecordedMessage]:
        return {"detections": self.detections, "hints": self.hints, "health": self.health}[topic]


def load_run(path: str | Path) -> Run:
    with RunReader(path) as reader:
        run = Run(reader.path, reader.rig, reader.info, reader.drive_path, reader.has_inputs)
        for recorded in reader.messages():
            run.topic(recorded.topic).append(recorded)
    return run


def as_run(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else load_run(run)


class _BytesDecoderFactory(DecoderFactory):
    """msgpack channels come back as their bytes (codec.decode parses them)."""

    def decoder_for(self, message_encoding: str, schema: Schema | None) -> Callable[[bytes], Any] | None:
        return bytes if message_encoding == MESSAGE_ENCODING else None


__all__ = ["MESSAGE_ENCODING", "OUTPUT_TOPICS", "RUN_FORMAT", "RUN_METADATA", "RecordedMessage", "Run",
           "RunReader", "annotations_topic", "as_run", "derived_topics", "load_run", "message_time", "schema_name"]
