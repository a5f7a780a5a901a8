"""Recorded drives: MCAP files that Foxglove opens and the replay harness reads (docs/drive_format.md).

    with DriveWriter("drive.mcap", rig) as w:          with DriveReader("drive.mcap") as r:
        w.write_frame("front", t_ns, frame)                for cf in r.frames(start_ns=t0):
        w.write_ground_truth(gt)                               ...
        w.write_ego(t_ns, speed_mps)

`open_drive` opens any supported recording (this format, a ROS 2 bag, video files) as a `Drive`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from google.protobuf.message import Message as ProtobufMessage
from mcap.decoder import DecoderFactory
from mcap.records import Schema
from mcap_protobuf.schema import build_file_descriptor_set

from calib.camera import CameraModel
from calib.rig import Rig
from perception.errors import ConfigError, DriveError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat
from perception.labels import AUTO_ORIGINS, CLASSES, GroundTruth
from perception.io.drive_common import CameraFrame, Drive, check_frame_size, select_cameras
from perception.io.drive_images import compressed_size, encode_jpeg, frame_from_compressed, frame_from_raw
from perception.io.drive_mcap import McapFile, McapReader, TruncatedDriveWarning
from perception.io.mcap_writer import MAX_LOG_TIME_NS, RIG_ATTACHMENT, McapFileWriter
from perception.io.ros2bag import Ros2BagReader
from perception.io.video import VideoDrive

__all__ = ["CameraFrame", "Drive", "DriveMessage", "DriveReader", "DriveWriter", "EgoState", "open_drive"]

EGO_TOPIC = "/ego/state"
_YUV = (PixelFormat.NV12, PixelFormat.YUYV)
_IMAGE_SCHEMAS = ("foxglove.CompressedImage", "foxglove.RawImage")


def image_topic(camera: str) -> str:
    return f"/camera/{camera}/image"


def calibration_topic(camera: str) -> str:
    return f"/camera/{camera}/calibration"


def ground_truth_topic(camera: str) -> str:
    return f"/camera/{camera}/ground_truth"


def _vector(n: int) -> dict:
    return {"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n}


EGO_SCHEMA = {
    "title": "perception.EgoState", "type": "object", "required": ["speed"],
    "properties": {"speed": {"type": "number", "description": "forward speed, m/s"}},
}
GROUND_TRUTH_SCHEMA = {
    "title": "perception.GroundTruth",
    "description": "Labels of one camera frame (perception/labels.py); log time = the frame's capture time",
    "type": "object", "required": ["camera", "t_ns", "boxes", "objects"],
    "properties": {
        "camera": {"type": "string"},
        "t_ns": {"type": "integer", "description": "capture time of the frame, ns"},
        "boxes": {"type": "array", "items": {
            "type": "object", "required": ["id", "cls", "box", "truncation", "occlusion"],
            "properties": {
                "id": {"type": "integer", "description": "track id, shared with `objects`"},
                "cls": {"enum": list(CLASSES)},
                "box": {**_vector(4), "description": "visible extent [x0, y0, x1, y1], pixels"},
                "truncation": {"type": "number", "minimum": 0, "maximum": 1},
                "occlusion": {"type": "number", "minimum": 0, "maximum": 1},
                "auto": {"type": "object", "description": "automatic label (perception autolabel)",
                         "required": ["teacher", "score", "track_score", "origin"],
                         "properties": {
                             "teacher": {"type": "string", "description": "model id of the teacher"},
                             "score": {"type": "number", "minimum": 0, "maximum": 1},
                             "track_score": {"type": "number", "minimum": 0, "maximum": 1},
                             "origin": {"enum": list(AUTO_ORIGINS)}}}}}},
        "objects": {"type": "array", "items": {
            "type": "object", "required": ["id", "cls", "position", "velocity", "size", "yaw"],
            "properties": {
                "id": {"type": "integer"},
                "cls": {"enum": list(CLASSES)},
                "position": {**_vector(3), "description": "box centre, vehicle frame (ISO 8855), m"},
                "velocity": {**_vector(3), "description": "relative to the ego vehicle, vehicle frame, m/s"},
                "size": {**_vector(3), "description": "length, width, height, m"},
                "yaw": {"type": "number", "description": "rad, about +z"}}}},
        "ego": {"type": "object", "required": ["speed"], "properties": {"speed": {"type": "number"}},
                "description": "absent where the ego speed is unknown"},
    },
}


@dataclass(frozen=True)
class EgoState:
    t_ns: int
    speed: float  # m/s, forward


@dataclass(frozen=True)
class DriveMessage:
    topic: str
    t_ns: int
    value: Any  # a protobuf message, or the parsed JSON of a JSON channel


@dataclass(frozen=True)
class _Channel:
    id: int
    schema: str
    metadata: dict[str, str]


class DriveWriter(McapFileWriter):
    """Writes a drive: the rig as an attachment first, then messages in any time order.

    Raw frames are stored as they are (format, size, row pitch; YUV colour spec in the channel metadata)
    unless `jpeg_quality` (1..100) is given, then they are converted to BGR and JPEG-encoded.
    """

    def __init__(self, path: str | Path, rig: Rig, *, jpeg_quality: int | None = None,
                 chunk_size: int = 4 * 2**20):
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be 1..100, got {jpeg_quality}")
        super().__init__(path, rig, what="drive writer", chunk_size=chunk_size)
        self.jpeg_quality = jpeg_quality
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, _Channel] = {}
        self._last_frame_ns: dict[str, int] = {}

    def write_frame(self, camera: str, t_ns: int, frame: Frame | bytes) -> None:
        """One camera image at its capture time: a raw Frame or the bytes of a JPEG file."""
        model = self._camera(camera)
        t_ns = _check_time(self.path, t_ns)
        last = self._last_frame_ns.get(camera)
        if last is not None and t_ns <= last:
            raise DriveError(f"{self.path}: camera {camera!r}: frame time {t_ns} ns is not after the previous "
                             f"frame's {last} ns")
        metadata: dict[str, str] = {}
        if isinstance(frame, Frame) and self.jpeg_quality is None:
            size = frame.width, frame.height
            message: ProtobufMessage = RawImage(frame_id=camera, width=frame.width, height=frame.height,
                                                encoding=frame.pixel_format.value, step=frame.stride,
                                                data=frame.rows().tobytes())
            if frame.pixel_format in _YUV:
                metadata = {"color_matrix": frame.color.matrix.value, "color_range": frame.color.range.value}
        else:
            if isinstance(frame, Frame):
                jpeg = encode_jpeg(frame, self.jpeg_quality)  # type: ignore[arg-type]
            else:
                jpeg = bytes(frame)
                if not jpeg.startswith(b"\xff\xd8\xff"):
                    raise DriveError(f"{self.path}: camera {camera!r}: frame bytes are not a JPEG file")
            size = compressed_size(f"{self.path}: camera {camera!r}", jpeg)
            message = CompressedImage(frame_id=camera, data=jpeg, format="jpeg")
        if size != (model.width, model.height):
            raise DriveError(f"{self.path}: camera {camera!r}: frame is {size[0]}x{size[1]}, the rig's "
                             f"calibration is {model.width}x{model.height}")
        message.timestamp.FromNanoseconds(t_ns)
        self._write_proto(image_topic(camera), t_ns, message, metadata)
        self._write_proto(calibration_topic(camera), t_ns, _calibration_message(model, t_ns), {})
        self._last_frame_ns[camera] = t_ns

    def write_ground_truth(self, gt: GroundTruth) -> None:
        self._camera(gt.camera)
        self.write_json(ground_truth_topic(gt.camera), gt.t_ns, gt.to_dict(), GROUND_TRUTH_SCHEMA)

    def write_ego(self, t_ns: int, speed: float) -> None:
        if not math.isfinite(speed):
            raise DriveError(f"{self.path}: {EGO_TOPIC}: speed must be finite, got {speed!r}")
        self.write_json(EGO_TOPIC, t_ns, {"speed": float(speed)}, EGO_SCHEMA)

    def write_message(self, topic: str, t_ns: int, message: ProtobufMessage) -> None:
        """Any protobuf message (e.g. a Foxglove schema) on its own topic."""
        self._write_proto(topic, t_ns, message, {})

    def write_json(self, topic: str, t_ns: int, value: Any, schema: dict) -> None:
        """A JSON message; `schema` is its JSON Schema, named by its "title"."""
        try:
            data = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise DriveError(f"{self.path}: {topic}: message is not valid JSON: {e}") from None
        channel = self._channel(topic, schema["title"], "jsonschema", lambda: json.dumps(schema).encode(),
                                "json", {})
        self._add(channel, t_ns, data)

    def _camera(self, camera: str) -> CameraModel:
        if camera not in self.rig:
            raise DriveError(f"{self.path}: camera {camera!r} is not in the rig ({', '.join(self.rig)})")
        return self.rig[camera]

    def _write_proto(self, topic: str, t_ns: int, message: ProtobufMessage, metadata: dict[str, str]) -> None:
        cls = type(message)
        channel = self._channel(topic, cls.DESCRIPTOR.full_name, "protobuf",
                                lambda: build_file_descriptor_set(cls).SerializeToString(), "protobuf", metadata)
        self._add(channel, t_ns, message.SerializeToString())

    def _channel(self, topic: str, schema_name: str, schema_encoding: str, schema_data: Callable[[], bytes],
                 message_encoding: str, metadata: dict[str, str]) -> _Channel:
        self._check_open()
        channel = self._channels.get(topic)
        if channel is None:
            if schema_name not in self._schemas:
                self._schemas[schema_name] = self._mcap.register_schema(schema_name, schema_encoding, schema_data())
            channel_id = self._mcap.register_channel(topic, message_encoding, self._schemas[schema_name], metadata)
            channel = self._channels[topic] = _Channel(channel_id, schema_name, metadata)
        elif channel.schema != schema_name:
            raise DriveError(f"{self.path}: {topic} carries {channel.schema}, cannot write a {schema_name}")
        elif channel.metadata != metadata:
            raise DriveError(f"{self.path}: {topic}: channel metadata was {channel.metadata}, now {metadata} "
                             "(the colour spec or format of a camera cannot change within a drive)")
        return channel

    def _add(self, channel: _Channel, t_ns: int, data: bytes) -> None:
        t_ns = _check_time(self.path, t_ns)
        self._mcap.add_message(channel.id, log_time=t_ns, data=data, publish_time=t_ns)


class DriveReader(McapReader):
    """Reads a drive written by DriveWriter (or anything with the same topics and a rig.yaml attachment).

    Frames come decoded: raw images as their Frame (same format, size, row pitch and colour spec), JPEG/PNG
    as BGR8. A file cut mid-write is read up to its last complete chunk, with a TruncatedDriveWarning.
    """

    def __init__(self, path: str | Path):
        self._mcap = McapFile(path, (_FoxgloveDecoderFactory(), _JsonDecoderFactory()))
        try:
            self.rig = self._read_rig()
            self._check_channels()
            self._colors = {camera: self._color(camera) for camera in self.rig}
            if self._mcap.truncated_at is not None and not self._mcap.has_messages(map(image_topic, self.rig)):
                raise DriveError(f"{self.path}: no readable frame (cut or damaged at byte "
                                 f"{self._mcap.truncated_at}, before the first complete chunk of images)")
        except BaseException:
            self._mcap.close()
            raise

    def frames(self, cameras: Iterable[str] | None = None, start_ns: int | None = None,
               end_ns: int | None = None, on_bad_frame: Callable[[DriveError], None] | None = None
               ) -> Iterator[CameraFrame]:
        """Frames of `cameras` (default all) with start_ns <= t_ns < end_ns, in time order across cameras
        (ties in file order). A malformed image raises DriveError, or with `on_bad_frame` is reported to
        it and skipped (the node counts such frames and goes on)."""
        topics = {image_topic(c): c for c in select_cameras(str(self.path), self.cameras, cameras)}
        skipped_before, read = self._mcap.skipped_chunks, 0
        for channel, message, image in self._mcap.messages(topics, start_ns, end_ns):
            read += 1
            camera = topics[channel.topic]
            try:
                frame = self._decode_image(camera, self._mcap.where(channel, message), image)
            except DriveError as e:
                if on_bad_frame is None:
                    raise
                on_bad_frame(e)
                continue
            yield CameraFrame(camera, message.log_time, frame)
        if read == 0 and self._mcap.skipped_chunks > skipped_before:
            raise DriveError(f"{self.path}: no readable frame: every chunk holding the frames asked for is damaged")

    def _decode_image(self, camera: str, where: str, image: ProtobufMessage) -> Frame:
        kind = image.DESCRIPTOR.full_name
        if kind == "foxglove.CompressedImage":
            if image.format not in ("jpeg", "png"):
                raise DriveError(f"{where}: compressed image format {image.format!r} is not jpeg or png")
            frame = frame_from_compressed(where, image.data)
        elif kind != "foxglove.RawImage":
            raise DriveError(f"{where}: a {kind} message on an image topic (the channel's schema is wrong)")
        else:
            frame = frame_from_raw(where, image.encoding, image.width, image.height, image.step, image.data,
                                   self._colors[camera])
        check_frame_size(where, frame, self.rig[camera])
        return frame

    def ground_truth(self, camera: str | None = None) -> Iterator[GroundTruth]:
        selected = select_cameras(str(self.path), self.cameras, None if camera is None else [camera])
        topics = {ground_truth_topic(c): c for c in selected}
        for channel, message, value in self._mcap.messages(topics):
            where = self._mcap.where(channel, message)
            gt = GroundTruth.from_dict(value, where)
            if gt.camera != topics[channel.topic] or gt.t_ns != message.log_time:
                raise DriveError(f"{where}: ground truth says camera {gt.camera!r} at {gt.t_ns} ns, "
                                 "not its topic's camera at its log time")
            yield gt

    def ego(self) -> Iterator[EgoState]:
        for channel, message, value in self._mcap.messages([EGO_TOPIC]):
            speed = value.get("speed") if isinstance(value, dict) else None
            if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed):
                raise DriveError(f"{self._mcap.where(channel, message)}: 'speed' must be a finite number, "
                                 f"got {speed!r}")
            yield EgoState(message.log_time, float(speed))

    def messages(self, topics: Iterable[str], start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[DriveMessage]:
        """Decoded messages of any topics, in log-time order (topics absent from the drive are skipped)."""
        for channel, message, value in self._mcap.messages(topics, start_ns, end_ns):
            yield DriveMessage(channel.topic, message.log_time, value)

    def _read_rig(self) -> Rig:
        return self._rig_attachment(RIG_ATTACHMENT, "the camera rig")

    def _check_channels(self) -> None:
        """Every camera topic belongs to a rig camera; image topics carry an image schema."""
        for topic, channel in self._mcap.channels.items():
            parts = topic.split("/")
            if len(parts) != 4 or parts[1] != "camera":
                continue
            if parts[2] not in self.rig:
                raise DriveError(f"{self.path}: topic {topic} names camera {parts[2]!r}, which is not in "
                                 f"{RIG_ATTACHMENT} ({', '.join(self.rig)})")
            schema = self._mcap.schema(channel)
            if parts[3] == "image" and (schema is None or schema.name not in _IMAGE_SCHEMAS):
                raise DriveError(f"{self.path}: {topic} has schema {schema.name if schema else None!r}, "
                                 f"expected one of {', '.join(_IMAGE_SCHEMAS)}")

    def _color(self, camera: str) -> ColorSpec:
        channel = self._mcap.channels.get(image_topic(camera))
        if channel is None or "color_matrix" not in channel.metadata:
            return ColorSpec()
        try:
            return ColorSpec(ColorMatrix(channel.metadata["color_matrix"]),
                             ColorRange(channel.metadata.get("color_range", "")))
        except ValueError as e:
            raise DriveError(f"{self.path}: {channel.topic}: invalid colour spec in channel metadata: {e}") from None


class _FoxgloveDecoderFactory(DecoderFactory):
    """Protobuf channels decode with the Foxglove classes this package ships, chosen by schema name; the
    schema bytes in the file are not compiled (a damaged descriptor once built a RawImage without `step`)."""

    CLASSES = {cls.DESCRIPTOR.full_name: cls for cls in (RawImage, CompressedImage, CameraCalibration)}

    def decoder_for(self, message_encoding: str, schema: Schema | None) -> Callable[[bytes], Any] | None:
        if message_encoding != "protobuf" or schema is None or schema.name not in self.CLASSES:
            return None
        return self.CLASSES[schema.name].FromString


class _JsonDecoderFactory(DecoderFactory):
    def decoder_for(self, message_encoding: str, schema: Schema | None) -> Callable[[bytes], Any] | None:
        return json.loads if message_encoding == "json" else None


def _check_time(path: Path, t_ns: int) -> int:
    if isinstance(t_ns, bool) or not isinstance(t_ns, int) or not 0 <= t_ns <= MAX_LOG_TIME_NS:
        raise DriveError(f"{path}: time must be an integer number of ns in 0..2^64-1, got {t_ns!r}")
    return t_ns


def _calibration_message(camera: CameraModel, t_ns: int) -> CameraCalibration:
    """Foxglove's view of the intrinsics (the extrinsics live in rig.yaml)."""
    model, coeffs = {"none": ("plumb_bob", (0.0,) * 5), "equidistant": ("kannala_brandt", camera.coeffs)}.get(
        camera.distortion, (camera.distortion, camera.coeffs))
    message = CameraCalibration(
        frame_id=camera.name, width=camera.width, height=camera.height, distortion_model=model, D=coeffs,
        K=camera.K.ravel().tolist(), R=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        P=[camera.fx, 0.0, camera.cx, 0.0, 0.0, camera.fy, camera.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    message.timestamp.FromNanoseconds(t_ns)
    return message


def open_drive(path_or_paths: str | Path | Sequence[str | Path]) -> Drive:
    """Any supported recording as a Drive.

    - one `.mcap` file (or a rosbag2 folder holding one): our drive when it has a rig.yaml attachment,
      else a ROS 2 bag;
    - a sqlite3 rosbag2 (a `.db3` file or its folder): a ROS 2 bag;
    - video files (a path or a list of paths, one per camera, named by the file stem).
    """
    paths = [Path(path_or_paths)] if isinstance(path_or_paths, (str, Path)) else [Path(p) for p in path_or_paths]
    if len(paths) == 1 and (paths[0].suffix == ".db3" or (paths[0].is_dir() and any(paths[0].glob("*.db3")))):
        return Ros2BagReader(paths[0])   # a sqlite3 rosbag2
    if len(paths) == 1 and paths[0].is_dir():
        found = sorted(paths[0].glob("*.mcap"))
        if len(found) != 1:
            raise DriveError(f"{paths[0]}: a bag folder must hold exactly one .mcap file, found {len(found)}")
        paths = found
    if len(paths) == 1 and paths[0].suffix == ".mcap":
        with warnings.catch_warnings():  # the reader opened below warns about a truncated file
            warnings.simplefilter("ignore", TruncatedDriveWarning)
            probe = McapFile(paths[0])
        try:  # our drives carry protobuf channels; a file cut before its rig attachment is still ours
            ours = any(a.name == RIG_ATTACHMENT for a in probe.summary.attachment_indexes) or any(
                c.message_encoding == "protobuf" for c in probe.summary.channels.values())
            if probe.truncated_at is not None and not ours and not probe.summary.channels:
                raise DriveError(f"{paths[0]}: the file is cut or damaged at byte {probe.truncated_at}, before "
                                 "its rig and first channel: no readable frame")
        finally:
            probe.close()
        return DriveReader(paths[0]) if ours else Ros2BagReader(paths[0])
    return VideoDrive(paths)
