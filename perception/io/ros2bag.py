"""ROS 2 bags (MCAP, or sqlite3 through the `rosbags` library): `sensor_msgs/msg/Image` and
`CompressedImage` topics as cameras, `CameraInfo` as their calibration, `/tf_static` as their mounting
(docs/drive_format.md, "ROS 2 bags")."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

from scipy.spatial.transform import Rotation

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
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF_STATIC_TOPIC = "/tf_static"
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


class MissingExtrinsicsWarning(UserWarning):
    """A bag camera has no /tf_static transform to the vehicle frame: it gets the default mounting."""


class Ros2BagReader(McapReader):
    """Cameras are the bag's image topics, named by `camera_name` unless `image_topics` (camera -> topic)
    picks them. A camera's intrinsics are the first message on `<namespace>/camera_info`; without one (or
    with K[0] == 0, ROS's "uncalibrated") it gets `default_camera`. Its mounting is the chain of `/tf_static`
    transforms from `vehicle_frame` to its images' `header.frame_id` (an optical frame, REP 103); without
    one it keeps the default mounting and a MissingExtrinsicsWarning says so. t_ns = the image's
    `header.stamp` (the recorder's log time when the stamp is 0). `path`: an MCAP file, a sqlite3 `.db3`
    file or a rosbag2 folder holding one."""

    def __init__(self, path: str | Path, image_topics: Mapping[str, str] | None = None,
                 vehicle_frame: str = "base_link"):
        path = Path(path)
        sqlite = path.suffix == ".db3" or (path.is_dir() and any(path.glob("*.db3")))
        self._mcap = _SqliteBag(path) if sqlite else McapFile(path, (Ros2DecoderFactory(),))  # type: ignore
        try:
            self._topics = dict(image_topics) if image_topics is not None else self._discover()
            for camera, topic in self._topics.items():
                if self._schema_name(topic) not in (IMAGE, COMPRESSED_IMAGE):
                    raise DriveError(f"{self.path}: camera {camera!r}: {topic} is not a sensor_msgs image topic "
                                     f"(schema {self._schema_name(topic)!r})")
            tree = self._static_transforms()
            self.rig = Rig(self._mounted(self._camera_model(camera, topic), topic, tree, vehicle_frame)
                           for camera, topic in self._topics.items())
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
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            yield CameraFrame(camera, stamp if stamp > 0 else message.log_time, frame)

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

    def _static_transforms(self) -> dict[str, tuple[str, np.ndarray]]:
        """child frame -> (parent frame, 4x4 child-to-parent transform), from every /tf_static message."""
        tree: dict[str, tuple[str, np.ndarray]] = {}
        if self._schema_name(TF_STATIC_TOPIC) != TF_MESSAGE:
            return tree
        for channel, message, msg in self._mcap.messages([TF_STATIC_TOPIC]):
            for t in msg.transforms:
                q = np.array([t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
                              t.transform.rotation.w], np.float64)
                if not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
                    raise DriveError(f"{self._mcap.where(channel, message)}: transform {t.header.frame_id} -> "
                                     f"{t.child_frame_id}: rotation {q.tolist()} is not a quaternion")
                T = np.eye(4)
                T[:3, :3] = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
                T[:3, 3] = (t.transform.translation.x, t.transform.translation.y, t.transform.translation.z)
                tree[t.child_frame_id] = (t.header.frame_id, T)
        return tree

    def _mounted(self, model: CameraModel, topic: str, tree: dict[str, tuple[str, np.ndarray]],
                 vehicle_frame: str) -> CameraModel:
        first = self._first(topic)
        frame_id = first[1].header.frame_id if first is not None else ""
        T, frame, seen = np.eye(4), frame_id, set()
        while frame != vehicle_frame and frame in tree and frame not in seen:
            seen.add(frame)
            parent, T_parent_frame = tree[frame]
            T, frame = T_parent_frame @ T, parent
        if not frame_id or frame != vehicle_frame:
            warnings.warn(f"{self.path}: camera {model.name!r}: no /tf_static transform from {vehicle_frame!r} to "
                          f"its frame {frame_id!r}; using the default mounting (range and 3D positions from this "
                          "camera assume it)", MissingExtrinsicsWarning, stacklevel=3)
            return model
        try:
            return dataclasses.replace(model, T_vehicle_camera=T)
        except CalibrationError as e:
            raise DriveError(f"{self.path}: camera {model.name!r}: /tf_static {vehicle_frame} -> {frame_id}: {e}") \
                from None

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


class _SqliteBag:
    """A sqlite3 rosbag2 read through `rosbags`, with the interface of McapFile that Ros2BagReader uses
    (channels by topic, schema names, decoded messages in time order, where, time range)."""

    def __init__(self, path: Path):
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        self.path = path
        folder = path.parent if path.suffix == ".db3" else path
        try:
            self._reader = Reader(folder)
            self._reader.open()
        except Exception as e:  # rosbags raises its own errors for a bad folder or metadata.yaml
            raise DriveError(f"{path}: not a readable rosbag2 folder: {e}") from None
        self._store = get_typestore(Stores.EMPTY)
        self.channels: dict[str, Any] = {}
        for c in self._reader.connections:
            self.channels[c.topic] = c
            try:
                if c.msgdef.data:
                    self._store.register(get_types_from_msg(c.msgdef.data, c.msgtype))
            except Exception as e:
                raise DriveError(f"{path}: {c.topic}: unreadable message definition of {c.msgtype}: {e}") from None

    @property
    def time_range(self) -> tuple[int, int] | None:
        return (self._reader.start_time, self._reader.end_time) if self._reader.message_count else None

    def schema(self, connection: Any) -> SimpleNamespace:
        return SimpleNamespace(name=connection.msgtype)

    def messages(self, topics: Iterable[str], start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[tuple[Any, SimpleNamespace, Any]]:
        connections = [self.channels[t] for t in topics if t in self.channels]
        if not connections:
            return
        for connection, t_ns, raw in self._reader.messages(connections, start=start_ns, stop=end_ns):
            message = SimpleNamespace(log_time=t_ns)
            try:
                decoded = self._store.deserialize_cdr(raw, connection.msgtype)
            except Exception as e:
                raise DriveError(f"{self.where(connection, message)}: undecodable {connection.msgtype}: {e}") \
                    from None
            yield connection, message, decoded

    def where(self, connection: Any, message: SimpleNamespace) -> str:
        return f"{self.path}: {connection.topic} @ log time {message.log_time}"

    def close(self) -> None:
        self._reader.close()
