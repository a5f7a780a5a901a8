"""ROS 2 bags in MCAP: `sensor_msgs/msg/Image` and `CompressedImage` topics as cameras, `CameraInfo` as
their calibration (docs/drive_format.md, "ROS 2 bags")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

from calib.camera import CameraModel
from calib.rig import Rig
from perception.errors import CalibrationError, DriveError
from perception.io.drive_common import (DEFAULT_T_VEHICLE_CAMERA, CameraFrame, check_frame_size, default_camera,
                                  select_cameras)
from perception.io.drive_images import check_size, compressed_size, frame_from_compressed, frame_from_raw
from perception.io.drive_mcap import McapFile, McapReader

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
_DISTORTIONS = ("plumb_bob", "rational_polynomial", "equidistant")  # ROS names = CameraModel names


def camera_namespace(topic: str) -> str:
    """`/cam/front/image_raw/compressed` -> `/cam/front`: the image topic without its last name."""
    parts = [p for p in topic.split("/") if p]
    if parts and parts[-1] == "compressed":
        parts.pop()
    return "/" + "/".join(parts[:-1] if len(parts) > 1 else parts)


def camera_name(topic: str) -> str:
    """The camera of an image topic: its namespace with "/" as "_" (`/cam/front/image_raw` -> cam_front)."""
    return camera_namespace(topic).strip("/").replace("/", "_")


class Ros2BagReader(McapReader):
    """Cameras are the bag's image topics, named by `camera_name` unless `image_topics` (camera -> topic)
    picks them. A camera's calibration is the first message on `<namespace>/camera_info`; without one (or
    with K[0] == 0, ROS's "uncalibrated") it gets `default_camera`. t_ns = the MCAP log time."""

    def __init__(self, path: str | Path, image_topics: Mapping[str, str] | None = None):
        self._mcap = McapFile(path, (Ros2DecoderFactory(),))
        try:
            self._topics = dict(image_topics) if image_topics is not None else self._discover()
            for camera, topic in self._topics.items():
                if self._schema_name(topic) not in (IMAGE, COMPRESSED_IMAGE):
                    raise DriveError(f"{self.path}: camera {camera!r}: {topic} is not a sensor_msgs image topic "
                                     f"(schema {self._schema_name(topic)!r})")
            self.rig = Rig(self._camera_model(camera, topic) for camera, topic in self._topics.items())
        except BaseException:
            self._mcap.close()
            raise

    def frames(self, cameras: Iterable[str] | None = None, start_ns: int | None = None,
               end_ns: int | None = None, on_bad_frame: Callable[[DriveError], None] | None = None
               ) -> Iterator[CameraFrame]:
        topics = {self._topics[c]: c for c in select_cameras(str(self.path), self.cameras, cameras)}
        for channel, message, msg in self._mcap.messages(topics, start_ns, end_ns):
            camera = topics[channel.topic]
            where = self._mcap.where(channel, message)
            try:
                if self._schema_name(channel.topic) == IMAGE:
                    frame = frame_from_raw(where, msg.encoding, msg.width, msg.height, msg.step, bytes(msg.data))
                else:
                    frame = frame_from_compressed(where, bytes(msg.data))
                check_frame_size(where, frame, self.rig[camera])
            except DriveError as e:
                if on_bad_frame is None:
                    raise
                on_bad_frame(e)
                continue
            yield CameraFrame(camera, message.log_time, frame)

    def _schema_name(self, topic: str) -> str | None:
        channel = self._mcap.channels.get(topic)
        schema = None if channel is None else self._mcap.schema(channel)
        return None if schema is None else schema.name

    def _discover(self) -> dict[str, str]:
        topics: dict[str, str] = {}
        for topic in sorted(self._mcap.channels):
            if self._schema_name(topic) in (IMAGE, COMPRESSED_IMAGE):
                name = camera_name(topic) or "camera"
                if name in topics:
                    raise DriveError(f"{self.path}: image topics {topics[name]} and {topic} are both camera "
                                     f"{name!r}; choose one per camera with image_topics={{camera: topic}}")
                topics[name] = topic
        if not topics:
            raise DriveError(f"{self.path}: no {IMAGE} or {COMPRESSED_IMAGE} topics in this bag")
        return topics

    def _first(self, topic: str) -> tuple[str, Any] | None:
        for channel, message, msg in self._mcap.messages([topic]):
            return self._mcap.where(channel, message), msg
        return None

    def _camera_model(self, camera: str, topic: str) -> CameraModel:
        info_topic = camera_namespace(topic).rstrip("/") + "/camera_info"
        info = self._first(info_topic) if self._schema_name(info_topic) == CAMERA_INFO else None
        if info is not None and info[1].k[0] != 0.0:
            return _from_camera_info(camera, *info)
        first = self._first(topic)
        if first is None:
            raise DriveError(f"{self.path}: {topic} has no messages and no camera_info: its image size is unknown")
        where, msg = first
        if self._schema_name(topic) == IMAGE:
            width, height = msg.width, msg.height
        else:
            width, height = compressed_size(where, bytes(msg.data))
        check_size(where, width, height)
        return default_camera(camera, width, height)


def _from_camera_info(camera: str, where: str, info: Any) -> CameraModel:
    d = [float(c) for c in info.d]
    if not any(d):
        distortion, coeffs = "none", ()
    elif info.distortion_model in _DISTORTIONS:
        distortion, coeffs = info.distortion_model, tuple(d)
    else:
        raise DriveError(f"{where}: unsupported distortion_model {info.distortion_model!r} (supported: "
                         f"{', '.join(_DISTORTIONS)})")
    k = [float(v) for v in info.k]
    try:
        return CameraModel(camera, int(info.width), int(info.height), k[0], k[4], k[2], k[5], distortion, coeffs,
                           DEFAULT_T_VEHICLE_CAMERA)
    except CalibrationError as e:
        raise DriveError(f"{where}: {e}") from None
