"""ROS 2 bags as drives: image header stamps, /tf_static mountings (with a warning where a camera has
none), and sqlite3 bags (written with the rosbags library)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer as RosbagsWriter
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from perception.errors import DriveError
from perception.io.drive import open_drive
from perception.io.drive_common import DEFAULT_T_VEHICLE_CAMERA
from perception.io.ros2bag import MissingExtrinsicsWarning, Ros2BagReader

W, H = 64, 48
MS = 1_000_000
STORE = get_typestore(Stores.ROS2_HUMBLE)
# base_link -> camera body (x forward) -> optical frame (x right, y down, z forward), as ROS drivers publish
T_BASE_BODY = np.eye(4)
T_BASE_BODY[:3, :3] = Rotation.from_euler("z", 10, degrees=True).as_matrix()
T_BASE_BODY[:3, 3] = (1.8, 0.2, 1.4)
T_BODY_OPTICAL = np.eye(4)
T_BODY_OPTICAL[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]


def _jpeg(value: int) -> np.ndarray:
    return np.frombuffer(cv2.imencode(".jpg", np.full((H, W, 3), value, np.uint8))[1].tobytes(), np.uint8)


def _stamp(t_ns: int):
    return STORE.types["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)


def _header(t_ns: int, frame_id: str):
    return STORE.types["std_msgs/msg/Header"](stamp=_stamp(t_ns), frame_id=frame_id)


def _transform(parent: str, child: str, T: np.ndarray):
    g = STORE.types
    x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
    return g["geometry_msgs/msg/TransformStamped"](
        header=_header(0, parent), child_frame_id=child,
        transform=g["geometry_msgs/msg/Transform"](
            translation=g["geometry_msgs/msg/Vector3"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
            rotation=g["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)))


def bag_messages():
    """(topic, msgtype, log time, message): a front camera with a mounting in /tf_static, a rear one
    without; image stamps 7 ms before the recorder's log time."""
    tf = STORE.types["tf2_msgs/msg/TFMessage"](transforms=[
        _transform("base_link", "front_link", T_BASE_BODY),
        _transform("front_link", "front_optical", T_BODY_OPTICAL)])
    out = [("/tf_static", "tf2_msgs/msg/TFMessage", 1, tf)]
    for i in range(4):
        t = 10**9 + i * 50 * MS
        for topic, frame in (("/front/image_raw/compressed", "front_optical"),
                             ("/rear/image_raw/compressed", "rear_optical")):
            image = STORE.types["sensor_msgs/msg/CompressedImage"](header=_header(t, frame), format="jpeg",
                                                                   data=_jpeg(40 * i))
            out.append((topic, "sensor_msgs/msg/CompressedImage", t + 7 * MS, image))
    return out


def write_bag(folder: Path, storage: StoragePlugin) -> Path:
    with RosbagsWriter(folder, version=8, storage_plugin=storage) as writer:
        connections = {}
        for topic, msgtype, t, msg in bag_messages():
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=STORE)
            writer.write(connections[topic], t, STORE.serialize_cdr(msg, msgtype))
    return folder


@pytest.mark.parametrize("kind", ["mcap", "sqlite3"])
def test_bag_stamps_and_static_transforms(tmp_path, kind):
    path = write_bag(tmp_path / "bag", StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
    with pytest.warns(MissingExtrinsicsWarning, match=r"camera 'rear': no /tf_static transform from "
                                                      r"'base_link' to its frame 'rear_optical'; using the default"):
        bag = open_drive(path)
    with bag:
        assert isinstance(bag, Ros2BagReader) and bag.cameras == ("front", "rear")
        assert np.allclose(bag.rig["front"].T_vehicle_camera, T_BASE_BODY @ T_BODY_OPTICAL, atol=1e-9)
        assert np.array_equal(bag.rig["rear"].T_vehicle_camera, DEFAULT_T_VEHICLE_CAMERA)
        frames = list(bag.frames())
        # the frame time is the image's header.stamp, not the recorder's receive time (7 ms later)
        assert [f.t_ns for f in frames if f.camera == "front"] == [10**9 + i * 50 * MS for i in range(4)]
        assert [int(f.frame.data[0, 0, 0]) for f in frames if f.camera == "rear"] == pytest.approx(
            [0, 40, 80, 120], abs=2)


def test_a_sqlite_folder_that_is_not_a_bag(tmp_path):
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "bag_0.db3").write_bytes(b"not sqlite")
    with pytest.raises(DriveError, match=r"bag: not a readable rosbag2 folder"):
        Ros2BagReader(tmp_path / "bag")
