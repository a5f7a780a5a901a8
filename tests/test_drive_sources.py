"""Recordings that are not our drive format: ROS 2 bags (written by mcap-ros2-support) and video files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap_ros2.writer import Writer as Ros2Writer

from perception.errors import DriveError
from perception.frame import PixelFormat
from perception.io.drive import open_drive
from perception.io.drive_common import default_camera
from perception.io.ros2bag import Ros2BagReader
from perception.io.video import VideoDrive

W, H = 64, 48
MS = 1_000_000

# Message definitions as rosbag2 stores them (sensor_msgs from ros2/common_interfaces, comments dropped).
HEADER_DEF = """
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
"""
IMAGE_DEF = """std_msgs/Header header
uint32 height
uint32 width
string encoding
uint8 is_bigendian
uint32 step
uint8[] data
""" + HEADER_DEF
COMPRESSED_IMAGE_DEF = """std_msgs/Header header
string format
uint8[] data
""" + HEADER_DEF
CAMERA_INFO_DEF = """std_msgs/Header header
uint32 height
uint32 width
string distortion_model
float64[] d
float64[9] k
float64[9] r
float64[12] p
uint32 binning_x
uint32 binning_y
RegionOfInterest roi
""" + HEADER_DEF + """
================================================================================
MSG: sensor_msgs/RegionOfInterest
uint32 x_offset
uint32 y_offset
uint32 height
uint32 width
bool do_rectify
"""
STRING_DEF = "string data\n"


def header(t_ns: int, frame_id: str) -> dict:
    return {"stamp": {"sec": t_ns // 10**9, "nanosec": t_ns % 10**9}, "frame_id": frame_id}


def image_msg(t_ns: int, encoding: str, step: int, data: bytes, width: int = W, height: int = H) -> dict:
    return {"header": header(t_ns, "cam"), "height": height, "width": width, "encoding": encoding,
            "is_bigendian": 0, "step": step, "data": data}


def camera_info_msg(t_ns: int, k: list[float], model: str, d: list[float]) -> dict:
    return {"header": header(t_ns, "cam"), "height": H, "width": W, "distortion_model": model, "d": d, "k": k,
            "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "p": [k[0], 0, k[2], 0, 0, k[4], k[5], 0, 0, 0, 1.0, 0],
            "binning_x": 0, "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}


FRONT_K = [55.0, 0.0, 32.5, 0.0, 56.0, 24.5, 0.0, 0.0, 1.0]
FRONT_D = [-0.2, 0.05, 0.001, -0.002, 0.0]


def write_bag(path: Path) -> dict[str, list]:
    """A bag with an rgb8 camera (+ camera_info), a JPEG camera, a UYVY camera, a mono8 camera with an
    uncalibrated camera_info, and a non-image topic. Returns what each camera was sent."""
    rng = np.random.default_rng(5)
    sent: dict[str, list] = {"cam_front": [], "cam_rear": [], "cam_side": [], "mono": []}
    with open(path, "wb") as f:
        writer = Ros2Writer(f)
        image = writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF)
        compressed = writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_DEF)
        info = writer.register_msgdef("sensor_msgs/msg/CameraInfo", CAMERA_INFO_DEF)
        string = writer.register_msgdef("std_msgs/msg/String", STRING_DEF)
        for i in range(5):
            t = 10**9 + i * 100 * MS
            rgb = rng.integers(0, 256, (H, 3 * W + 6), dtype=np.uint8)  # 6 bytes of row padding
            writer.write_message("/cam/front/image_raw", image, image_msg(t, "rgb8", 3 * W + 6, rgb.tobytes()),
                                 log_time=t)
            writer.write_message("/cam/front/camera_info", info, camera_info_msg(t, FRONT_K, "plumb_bob", FRONT_D),
                                 log_time=t)
            sent["cam_front"].append((t, rgb))
            writer.write_message("/chatter", string, {"data": f"hello {i}"}, log_time=t + 1)
            if i % 2 == 0:
                bgr = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (7, 7), 2)
                jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
                writer.write_message("/cam/rear/image_raw/compressed", compressed,
                                     {"header": header(t + 3 * MS, "rear"), "format": "rgb8; jpeg compressed bgr8",
                                      "data": jpeg}, log_time=t + 3 * MS)
                sent["cam_rear"].append((t + 3 * MS, jpeg))
            uyvy = rng.integers(0, 256, (H, 2 * W), dtype=np.uint8)
            writer.write_message("/cam/side/image_raw", image, image_msg(t - 2 * MS, "yuv422", 2 * W, uyvy.tobytes()),
                                 log_time=t - 2 * MS)
            sent["cam_side"].append((t - 2 * MS, uyvy))
            gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
            writer.write_message("/mono/image", image, image_msg(t + 1 * MS, "mono8", W, gray.tobytes()),
                                 log_time=t + 1 * MS)
            writer.write_message("/mono/camera_info", info, camera_info_msg(t, [0.0] * 9, "", []), log_time=t)
            sent["mono"].append((t + 1 * MS, gray))
        writer.finish()
    return sent


def test_ros2_bag_cameras_calibration_and_frames(tmp_path: Path) -> None:
    sent = write_bag(tmp_path / "bag.mcap")
    with open_drive(tmp_path / "bag.mcap") as bag:
        assert isinstance(bag, Ros2BagReader)
        assert bag.cameras == ("cam_front", "cam_rear", "cam_side", "mono")
        front = bag.rig["cam_front"]
        assert (front.width, front.height, front.fx, front.fy, front.cx, front.cy) == (W, H, 55.0, 56.0, 32.5, 24.5)
        assert (front.distortion, front.coeffs) == ("plumb_bob", tuple(FRONT_D))
        assert bag.rig["cam_rear"] == default_camera("cam_rear", W, H)  # no camera_info
        assert bag.rig["mono"] == default_camera("mono", W, H)  # camera_info with K[0] == 0: uncalibrated
        frames = list(bag.frames())
        assert (bag.start_ns, bag.end_ns) == (10**9 - 2 * MS, 10**9 + 400 * MS + 3 * MS)

    times = [f.t_ns for f in frames]
    assert times == sorted(times) and len(frames) == sum(len(v) for v in sent.values())
    by_camera = {c: [f for f in frames if f.camera == c] for c in sent}
    for (t, rgb), f in zip(sent["cam_front"], by_camera["cam_front"], strict=True):
        assert f.t_ns == t and f.frame.pixel_format is PixelFormat.RGB8 and f.frame.stride == 3 * W + 6
        assert np.array_equal(f.frame.rows(), rgb)
    for (t, jpeg), f in zip(sent["cam_rear"], by_camera["cam_rear"], strict=True):
        assert f.t_ns == t
        assert np.array_equal(f.frame.data, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    for (t, uyvy), f in zip(sent["cam_side"], by_camera["cam_side"], strict=True):
        assert f.frame.pixel_format is PixelFormat.YUYV
        yuyv = f.frame.rows()
        assert np.array_equal(yuyv[:, 0::2], uyvy[:, 1::2]) and np.array_equal(yuyv[:, 1::2], uyvy[:, 0::2])
    for (t, gray), f in zip(sent["mono"], by_camera["mono"], strict=True):
        assert f.frame.pixel_format is PixelFormat.BGR8
        assert all(np.array_equal(f.frame.data[:, :, c], gray) for c in range(3))


def test_ros2_bag_seek_and_filter(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag.mcap")
    with Ros2BagReader(tmp_path / "bag.mcap") as bag:
        all_frames = [(f.camera, f.t_ns) for f in bag.frames()]
        start = 10**9 + 200 * MS
        assert [(f.camera, f.t_ns) for f in bag.frames(start_ns=start)] == [f for f in all_frames if f[1] >= start]
        assert [(f.camera, f.t_ns) for f in bag.frames(cameras=["cam_rear"])] == \
               [f for f in all_frames if f[0] == "cam_rear"]


def test_ros2_bag_ambiguous_cameras_and_bad_images(tmp_path: Path) -> None:
    with open(tmp_path / "bag.mcap", "wb") as f:
        writer = Ros2Writer(f)
        image = writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF)
        compressed = writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_DEF)
        writer.write_message("/cam/image_raw", image, image_msg(5, "bgr8", 3 * W, bytes(3 * W * H)), log_time=5)
        writer.write_message("/cam/image_raw", image, image_msg(9, "bgr8", 3 * W, bytes(3 * W * H - 3)), log_time=9)
        writer.write_message("/cam/image_raw/compressed", compressed,
                             {"header": header(5, "cam"), "format": "jpeg", "data": b"not a jpeg"}, log_time=5)
        writer.finish()
    with pytest.raises(DriveError, match="/cam/image_raw and /cam/image_raw/compressed are both camera 'cam'"):
        Ros2BagReader(tmp_path / "bag.mcap")
    with Ros2BagReader(tmp_path / "bag.mcap", image_topics={"cam": "/cam/image_raw"}) as bag:
        frames = bag.frames()
        assert next(frames).t_ns == 5
        with pytest.raises(DriveError, match=r"bag\.mcap: /cam/image_raw @ log time 9: bgr8 64x48 step 192 needs "
                                             r"9216 bytes \(48 rows\), the message has 9213"):
            next(frames)
    with pytest.raises(DriveError, match="not a readable JPEG/PNG image"):
        Ros2BagReader(tmp_path / "bag.mcap", image_topics={"cam": "/cam/image_raw/compressed"})


def write_video(path: Path, fps: float, values: list[int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for v in values:
        writer.write(np.full((H, W, 3), v, np.uint8))
    writer.release()


def test_video_files_one_camera_each_with_container_timestamps(tmp_path: Path) -> None:
    write_video(tmp_path / "front.avi", 10, [10, 40, 70, 100, 130, 160])
    write_video(tmp_path / "rear.avi", 5, [200, 220, 240])
    with open_drive([tmp_path / "front.avi", tmp_path / "rear.avi"]) as drive:
        assert isinstance(drive, VideoDrive)
        assert drive.cameras == ("front", "rear")
        assert drive.rig["front"] == default_camera("front", W, H)
        assert (drive.rig["front"].fx, drive.rig["front"].cx, drive.rig["front"].cy) == (W, (W - 1) / 2, (H - 1) / 2)
        got = [(f.camera, f.t_ns, int(np.rint(f.frame.data.mean()))) for f in drive.frames()]
        assert (drive.start_ns, drive.end_ns, drive.duration_ns) == (0, 500 * MS, 500 * MS)
        seek = [(f.camera, f.t_ns) for f in drive.frames(start_ns=250 * MS, end_ns=450 * MS)]
        rear = [f.t_ns for f in drive.frames(cameras=["rear"])]
    expected = [("front", 0, 10), ("rear", 0, 200), ("front", 100 * MS, 40), ("front", 200 * MS, 70),
                ("rear", 200 * MS, 220), ("front", 300 * MS, 100), ("front", 400 * MS, 130),
                ("rear", 400 * MS, 240), ("front", 500 * MS, 160)]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert all(abs(g[2] - e[2]) <= 2 for g, e in zip(got, expected))
    assert seek == [("front", 300 * MS), ("front", 400 * MS), ("rear", 400 * MS)]
    assert rear == [0, 200 * MS, 400 * MS]


def test_video_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(DriveError, match=r"notes\.txt: OpenCV cannot open it as a video"):
        open_drive(tmp_path / "notes.txt")
    with pytest.raises(DriveError, match=r"missing\.avi: no such video file"):
        open_drive(tmp_path / "missing.avi")
    write_video(tmp_path / "front.avi", 10, [1])
    (tmp_path / "b").mkdir()
    write_video(tmp_path / "b" / "front.avi", 10, [1])
    with pytest.raises(DriveError, match="distinct names"):
        VideoDrive([tmp_path / "front.avi", tmp_path / "b" / "front.avi"])


def test_real_footage_vtest(shared_data: Path) -> None:
    path = shared_data / "opencv-samples" / "vtest.avi"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with open_drive(path) as drive:
        assert drive.cameras == ("vtest",)
        assert (drive.rig["vtest"].width, drive.rig["vtest"].height) == (768, 576)
        frames = list(drive.frames(end_ns=10**9))
        assert drive.duration_ns == 79_400 * MS  # 795 frames at 10 fps
    assert [f.t_ns for f in frames] == [i * 100 * MS for i in range(10)]
    assert frames[0].frame.data.shape == (576, 768, 3) and frames[0].frame.data.std() > 10  # real content


@pytest.mark.parametrize("model, d, error", [
    ("fisheye62", [0.1] * 6, r"/cam/camera_info @ log time 5: unsupported distortion_model 'fisheye62'"),
    ("plumb_bob", [0.1, 0.01, 0.0, 0.0], r"/cam/camera_info @ log time 5: .*'plumb_bob' takes 5 coefficients, got 4"),
])
def test_ros2_bag_bad_camera_info(tmp_path: Path, model: str, d: list[float], error: str) -> None:
    with open(tmp_path / "bag.mcap", "wb") as f:
        writer = Ros2Writer(f)
        image = writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF)
        info = writer.register_msgdef("sensor_msgs/msg/CameraInfo", CAMERA_INFO_DEF)
        writer.write_message("/cam/camera_info", info, camera_info_msg(5, FRONT_K, model, d), log_time=5)
        writer.write_message("/cam/image_raw", image, image_msg(5, "bgr8", 3 * W, bytes(3 * W * H)), log_time=5)
        writer.finish()
    with pytest.raises(DriveError, match=error):
        Ros2BagReader(tmp_path / "bag.mcap")
