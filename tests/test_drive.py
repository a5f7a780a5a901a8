"""MCAP drives: round trips of every frame format, labels, time order, seek, truncation and bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from mcap.writer import Writer as McapWriter

from calib.camera import CameraModel, mount_transform
from calib.rig import Rig
from perception.errors import ConfigError, DriveError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat, buffer_rows, min_stride
from perception.labels import GroundTruth, GroundTruthBox, GroundTruthObject
from perception.io.drive import DriveReader, DriveWriter, open_drive
from perception.io.drive_images import MAX_IMAGE_SIDE
from perception.io.drive_mcap import BadChunkWarning, McapFile, TruncatedDriveWarning

W, H = 64, 48
MS = 1_000_000


def make_rig(*names: str) -> Rig:
    return Rig(CameraModel(name, W, H, 50.0, 51.0, 31.5, 23.5, "plumb_bob", (-0.1, 0.01, 0.001, 0.0, 0.0),
                           mount_transform(1.5, 0.2 * i, 1.4, yaw_deg=10.0 * i)) for i, name in enumerate(names))


def padded_frame(fmt: PixelFormat, rng: np.random.Generator, color: ColorSpec = ColorSpec()) -> Frame:
    """A random frame whose rows are 8 bytes longer than needed (the padding is random too)."""
    stride = min_stride(fmt, W) + 8
    return Frame(rng.integers(0, 256, stride * buffer_rows(fmt, H), dtype=np.uint8), W, H, stride, fmt, color)


def labels(camera: str, t_ns: int, k: int) -> GroundTruth:
    return GroundTruth(camera, t_ns,
                       (GroundTruthBox(k, "car", (1.0, 2.5, 30.0, 40.0), 0.0, 0.25),
                        GroundTruthBox(k + 1, "pedestrian", (40.0, 10.0, 45.5, 30.0), 0.5, 0.0)),
                       (GroundTruthObject(k, "car", (20.0, -1.5, 0.8), (-3.0, 0.1, 0.0), (4.5, 1.8, 1.5), 0.05),),
                       ego_speed=12.5 + k)


def marked(value: int) -> Frame:
    """A BGR frame whose pixels all equal `value`, so a read frame tells which one was written."""
    return Frame.from_bgr(np.full((H, W, 3), value, np.uint8))


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_raw_frames_round_trip_bytes_stride_and_colour(tmp_path: Path, fmt: PixelFormat) -> None:
    rng = np.random.default_rng(1)
    color = ColorSpec(ColorMatrix.BT709, ColorRange.FULL)
    frames = [padded_frame(fmt, rng, color) for _ in range(3)]
    rig = make_rig("front")
    with DriveWriter(tmp_path / "d.mcap", rig) as writer:
        for i, frame in enumerate(frames):
            writer.write_frame("front", 1_000 * MS + i * 50 * MS, frame)
    with DriveReader(tmp_path / "d.mcap") as reader:
        assert reader.rig == rig
        got = list(reader.frames())
    assert [f.t_ns for f in got] == [1_000 * MS + i * 50 * MS for i in range(3)]
    for written, read in zip(frames, got):
        assert read.camera == "front"
        assert (read.frame.pixel_format, read.frame.stride, read.frame.width, read.frame.height) == \
               (fmt, written.stride, W, H)
        assert np.array_equal(read.frame.rows(), written.rows())
        if fmt in (PixelFormat.NV12, PixelFormat.YUYV):
            assert read.frame.color == color


def test_jpeg_bytes_are_stored_as_given_and_decode_to_bgr(tmp_path: Path) -> None:
    image = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8), (9, 9), 3)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 5, jpeg)
    with DriveReader(tmp_path / "d.mcap") as reader:
        (read,) = reader.frames()
        (stored,) = reader.messages(["/camera/front/image"])
    assert stored.value.format == "jpeg" and stored.value.data == jpeg
    assert read.frame.pixel_format is PixelFormat.BGR8
    assert np.array_equal(read.frame.data, cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("matrix, yuv", [(ColorMatrix.BT601, (81, 90, 240)), (ColorMatrix.BT709, (63, 102, 240))])
def test_jpeg_option_converts_yuv_with_the_frames_colour_matrix(tmp_path: Path, matrix: ColorMatrix,
                                                                yuv: tuple[int, int, int]) -> None:
    y, u, v = yuv  # pure red in limited range for that matrix
    nv12 = np.empty((H * 3 // 2, W), np.uint8)
    nv12[:H] = y
    nv12[H:, 0::2], nv12[H:, 1::2] = u, v
    frame = Frame(nv12.reshape(-1), W, H, W, PixelFormat.NV12, ColorSpec(matrix, ColorRange.LIMITED))
    with DriveWriter(tmp_path / "d.mcap", make_rig("front"), jpeg_quality=95) as writer:
        writer.write_frame("front", 0, frame)
    with DriveReader(tmp_path / "d.mcap") as reader:
        (read,) = reader.frames()
    assert read.frame.pixel_format is PixelFormat.BGR8
    assert np.abs(read.frame.data.reshape(-1, 3).astype(int) - [0, 0, 255]).max() <= 6


def test_jpeg_quality_must_be_in_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="jpeg_quality"):
        DriveWriter(tmp_path / "d.mcap", make_rig("front"), jpeg_quality=0)


def test_ground_truth_and_ego_round_trip(tmp_path: Path) -> None:
    rig = make_rig("front", "left")
    written = [labels(camera, t * 100 * MS + k, t) for t in range(4) for k, camera in enumerate(rig)]
    with DriveWriter(tmp_path / "d.mcap", rig) as writer:
        for gt in reversed(written):  # any write order; the reader sorts by time
            writer.write_ground_truth(gt)
        for t in range(4):
            writer.write_ego(t * 100 * MS, 10.0 + t / 4)
    with DriveReader(tmp_path / "d.mcap") as reader:
        assert list(reader.ground_truth()) == sorted(written, key=lambda gt: gt.t_ns)
        assert list(reader.ground_truth("left")) == [gt for gt in written if gt.camera == "left"]
        assert [(e.t_ns, e.speed) for e in reader.ego()] == [(t * 100 * MS, 10.0 + t / 4) for t in range(4)]
        with pytest.raises(DriveError, match="no camera 'rear'"):
            list(reader.ground_truth("rear"))


def test_channels_are_the_foxglove_schemas(tmp_path: Path) -> None:
    rig = make_rig("front")
    with DriveWriter(tmp_path / "d.mcap", rig) as writer:
        writer.write_frame("front", 7, padded_frame(PixelFormat.NV12, np.random.default_rng(0)))
        writer.write_ground_truth(labels("front", 7, 0))
        writer.write_ego(7, 3.0)
    mcap = McapFile(tmp_path / "d.mcap")
    try:
        kinds = {t: (c.message_encoding, mcap.schema(c).encoding, mcap.schema(c).name)
                 for t, c in mcap.channels.items()}
        gt_schema = json.loads(mcap.schema(mcap.channels["/camera/front/ground_truth"]).data)
        image_meta = mcap.channels["/camera/front/image"].metadata
    finally:
        mcap.close()
    assert kinds == {
        "/camera/front/image": ("protobuf", "protobuf", "foxglove.RawImage"),
        "/camera/front/calibration": ("protobuf", "protobuf", "foxglove.CameraCalibration"),
        "/camera/front/ground_truth": ("json", "jsonschema", "perception.GroundTruth"),
        "/ego/state": ("json", "jsonschema", "perception.EgoState"),
    }
    assert set(gt_schema["required"]) == set(labels("front", 7, 0).to_dict()) - {"ego"}  # ego may be unknown
    assert set(gt_schema["properties"]) == set(labels("front", 7, 0).to_dict())
    assert image_meta == {"color_matrix": "bt601", "color_range": "limited"}
    with DriveReader(tmp_path / "d.mcap") as reader:
        (calibration,) = reader.messages(["/camera/front/calibration"])
    cam = rig["front"]
    assert calibration.t_ns == 7 and calibration.value.distortion_model == "plumb_bob"
    assert list(calibration.value.K) == cam.K.ravel().tolist() and list(calibration.value.D) == list(cam.coeffs)
    assert (calibration.value.width, calibration.value.height, calibration.value.frame_id) == (W, H, "front")


def chunk_indexes(path: Path) -> list:
    mcap = McapFile(path)
    mcap.close()
    return mcap.summary.chunk_indexes


def write_jittered(path: Path, rig: Rig, n: int = 12, chunk_size: int = 4 * 2**20) -> list[tuple[str, int, int]]:
    """Cameras at 10 Hz with +-4 ms capture jitter, written one camera after the other; returns
    (camera, t_ns, pixel value) in time order."""
    rng = np.random.default_rng(3)
    written = []
    with DriveWriter(path, rig, chunk_size=chunk_size) as writer:
        for k, camera in enumerate(rig):
            for i in range(n):
                t_ns = 1_000 * MS + i * 100 * MS + k * MS + int(rng.integers(-4 * MS, 4 * MS))
                value = (k * n + i) % 256
                writer.write_frame(camera, t_ns, marked(value))
                written.append((camera, t_ns, value))
    return sorted(written, key=lambda w: w[1])


def read_marks(frames) -> list[tuple[str, int, int]]:
    out = []
    for f in frames:
        assert f.frame.data.min() == f.frame.data.max()
        out.append((f.camera, f.t_ns, int(f.frame.data.flat[0])))
    return out


def test_frames_are_time_ordered_across_cameras_and_chunks(tmp_path: Path) -> None:
    rig = make_rig("front", "left", "right")
    written = write_jittered(tmp_path / "d.mcap", rig, chunk_size=8_000)
    assert len(chunk_indexes(tmp_path / "d.mcap")) > 10
    with DriveReader(tmp_path / "d.mcap") as reader:
        assert read_marks(reader.frames()) == written
        assert (reader.start_ns, reader.end_ns) == (written[0][1], written[-1][1])
        assert reader.duration_ns == written[-1][1] - written[0][1]


def test_seek_and_camera_filter(tmp_path: Path) -> None:
    rig = make_rig("front", "left", "right")
    written = write_jittered(tmp_path / "d.mcap", rig, chunk_size=8_000)
    start, end = written[10][1], written[25][1]
    with DriveReader(tmp_path / "d.mcap") as reader:
        assert read_marks(reader.frames(start_ns=start)) == written[10:]
        assert read_marks(reader.frames(start_ns=start, end_ns=end)) == written[10:25]
        assert read_marks(reader.frames(cameras=["right", "front"])) == [w for w in written if w[0] != "left"]
        with pytest.raises(DriveError, match="no camera 'rear'"):
            next(reader.frames(cameras=["rear"]))


@pytest.mark.parametrize("cut_fraction", [0.12, 0.37, 0.5, 0.81, 0.97])
def test_truncated_file_reads_up_to_the_cut_with_a_warning(tmp_path: Path, cut_fraction: float) -> None:
    rig = make_rig("front", "left")
    full = tmp_path / "full.mcap"
    rng = np.random.default_rng(4)
    with DriveWriter(full, rig, chunk_size=30_000) as writer:  # ~3 noisy frames per chunk
        for i in range(30):
            for k, camera in enumerate(rig):
                writer.write_frame(camera, i * 100 * MS + k, padded_frame(PixelFormat.RGB8, rng))
    with DriveReader(full) as reader:
        everything = [(f.camera, f.t_ns, f.frame.rows().tobytes()) for f in reader.frames()]
    chunks = chunk_indexes(full)
    data = full.read_bytes()
    # cut in the middle of the chunk that spans the chosen offset
    target = int(len(data) * cut_fraction)
    chunk = next(c for c in chunks if c.chunk_start_offset + c.chunk_length > target)
    cut = chunk.chunk_start_offset + chunk.chunk_length // 2
    complete_until = max((c.message_end_time for c in chunks if c.chunk_start_offset + c.chunk_length <= cut),
                         default=-1)
    (tmp_path / "cut.mcap").write_bytes(data[:cut])
    with pytest.warns(TruncatedDriveWarning, match="truncated"):
        reader = DriveReader(tmp_path / "cut.mcap")
    with reader:
        assert reader.rig == rig
        got = [(f.camera, f.t_ns, f.frame.rows().tobytes()) for f in reader.frames()]
    assert got == [e for e in everything if e[1] <= complete_until]
    assert 0 < len(everything) - len(got)


def test_file_cut_before_the_rig_is_an_error(tmp_path: Path) -> None:
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 0, marked(1))
    (tmp_path / "cut.mcap").write_bytes((tmp_path / "d.mcap").read_bytes()[:60])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedDriveWarning)
        with pytest.raises(DriveError, match=r"cut\.mcap: expected one rig\.yaml attachment"):
            DriveReader(tmp_path / "cut.mcap")


def test_not_an_mcap_file_and_missing_rig(tmp_path: Path) -> None:
    (tmp_path / "notes.mcap").write_text("hello, not a drive")
    with pytest.raises(DriveError, match=r"notes\.mcap: not an MCAP file"):
        DriveReader(tmp_path / "notes.mcap")
    with pytest.raises(DriveError, match="cannot open"):
        DriveReader(tmp_path / "missing.mcap")
    with open(tmp_path / "norig.mcap", "wb") as f:
        plain = McapWriter(f)
        plain.start()
        plain.finish()
    with pytest.raises(DriveError, match=r"norig\.mcap: expected one rig\.yaml attachment"):
        DriveReader(tmp_path / "norig.mcap")


def raw_image(width: int, height: int, encoding: str, step: int, size: int) -> RawImage:
    return RawImage(frame_id="front", width=width, height=height, encoding=encoding, step=step, data=bytes(size))


@pytest.mark.parametrize("message, error", [
    (raw_image(W, H, "bgr8", 3 * W, 3 * W * H - 1),
     r"bgr8 64x48 step 192 needs 9216 bytes \(48 rows\), the message has 9215"),
    (raw_image(W, H, "nv12", W, W * H), r"nv12 64x48 step 64 needs 4608 bytes"),
    (raw_image(W, H, "yuyv", W, 2 * W * H), r"yuyv 64x48: step 64 is below the minimum 128 bytes"),
    (raw_image(MAX_IMAGE_SIDE + 2, 2, "bgr8", 3 * (MAX_IMAGE_SIDE + 2), 0), r"image size 16386x2 is outside"),
    (raw_image(W, H, "bayer_rggb8", W, W * H), r"unsupported raw image encoding 'bayer_rggb8'"),
    (raw_image(W // 2, H, "bgr8", 3 * W // 2, 3 * W // 2 * H),
     r"image is 32x48, the calibration of camera 'front' is 64x48"),
    (CompressedImage(frame_id="front", format="jpeg", data=b"\xff\xd8\xff\xe0 garbage"),
     r"not a readable JPEG/PNG image"),
])
def test_bad_images_are_clear_errors_naming_file_topic_and_time(tmp_path: Path, message, error: str) -> None:
    first = marked(3) if isinstance(message, RawImage) else cv2.imencode(".jpg", marked(3).data)[1].tobytes()
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 10, first)
        writer.write_message("/camera/front/image", 20, message)
    with DriveReader(tmp_path / "d.mcap") as reader:
        frames = reader.frames()
        assert next(frames).t_ns == 10
        with pytest.raises(DriveError, match=r"d\.mcap: /camera/front/image @ log time 20: " + error):
            next(frames)


def test_a_damaged_chunk_is_skipped_with_a_warning_and_the_rest_is_read(tmp_path: Path) -> None:
    rig = make_rig("front", "left")
    written = write_jittered(tmp_path / "d.mcap", rig, chunk_size=8_000)
    chunks = sorted(chunk_indexes(tmp_path / "d.mcap"), key=lambda c: c.chunk_start_offset)
    bad = chunks[len(chunks) // 2]
    mcap = McapFile(tmp_path / "d.mcap")
    in_bad = {(mcap.summary.channels[m.channel_id].topic.split("/")[2], m.log_time)
              for m in mcap._chunk_messages(bad) if mcap.summary.channels[m.channel_id].topic.endswith("/image")}
    mcap.close()
    data = bytearray((tmp_path / "d.mcap").read_bytes())
    data[bad.chunk_start_offset + bad.chunk_length - 20] ^= 0x01  # one flipped bit
    (tmp_path / "d.mcap").write_bytes(bytes(data))
    with DriveReader(tmp_path / "d.mcap") as reader:
        with pytest.warns(BadChunkWarning, match=rf"d\.mcap: skipped the damaged chunk at byte {bad.chunk_start_offset}"):
            got = read_marks(reader.frames())
    assert in_bad and got == [w for w in written if w[:2] not in in_bad]


def test_every_chunk_damaged_is_no_readable_frame(tmp_path: Path) -> None:
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 10, marked(3))
    (chunk,) = chunk_indexes(tmp_path / "d.mcap")
    data = bytearray((tmp_path / "d.mcap").read_bytes())
    data[chunk.chunk_start_offset + chunk.chunk_length - 20] ^= 0xFF
    (tmp_path / "d.mcap").write_bytes(bytes(data))
    with DriveReader(tmp_path / "d.mcap") as reader, pytest.warns(BadChunkWarning), \
            pytest.raises(DriveError, match=r"d\.mcap: no readable frame"):
        list(reader.frames())


def test_truncated_drive_without_a_complete_chunk_is_no_readable_frame(tmp_path: Path) -> None:
    rig = make_rig("front", "left")
    write_jittered(tmp_path / "d.mcap", rig, chunk_size=8_000)
    first = min(chunk_indexes(tmp_path / "d.mcap"), key=lambda c: c.chunk_start_offset)
    data = (tmp_path / "d.mcap").read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[:first.chunk_start_offset + first.chunk_length // 2])
    with pytest.warns(TruncatedDriveWarning), pytest.raises(DriveError, match=r"cut\.mcap: no readable frame"):
        DriveReader(tmp_path / "cut.mcap")
    with pytest.warns(TruncatedDriveWarning), pytest.raises(DriveError, match=r"cut\.mcap: no readable frame"):
        open_drive(tmp_path / "cut.mcap")


@pytest.mark.parametrize("cut", [9, 30, 60, 120])
def test_cut_before_the_rig_is_not_called_a_ros2_bag(tmp_path: Path, cut: int) -> None:
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 0, marked(1))
    (tmp_path / "cut.mcap").write_bytes((tmp_path / "d.mcap").read_bytes()[:cut])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedDriveWarning)
        with pytest.raises(DriveError) as e:
            open_drive(tmp_path / "cut.mcap")
    assert "ROS 2" not in str(e.value) and "cut.mcap" in str(e.value)


def test_schemas_are_the_shipped_foxglove_classes_not_the_files_descriptors(tmp_path: Path) -> None:
    """The file's descriptor bytes are never compiled: garbage there changes nothing (a damaged descriptor
    once built a RawImage class without `step`); a schema name that is not a Foxglove image is refused."""
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 10, marked(3))
    clean = (tmp_path / "d.mcap").read_bytes()
    data = bytearray(clean)
    name = b"foxglove.RawImage"
    for at in (data.index(name), data.rindex(name)):  # the schema record, and its copy in the summary
        data[at + len(name) + 16: at + len(name) + 48] = bytes(range(32))  # garbage descriptor
    (tmp_path / "d.mcap").write_bytes(bytes(data))
    with DriveReader(tmp_path / "d.mcap") as reader:
        (frame,) = [f.frame for f in reader.frames()]
    (tmp_path / "clean.mcap").write_bytes(clean)
    with DriveReader(tmp_path / "clean.mcap") as reader:
        np.testing.assert_array_equal(frame.data, next(iter(reader.frames())).frame.data)
    renamed = clean.replace(name, b"foxglove.RawImagf")
    (tmp_path / "renamed.mcap").write_bytes(renamed)
    with pytest.raises(DriveError, match=r"renamed\.mcap: /camera/front/image has schema 'foxglove.RawImagf'"):
        with DriveReader(tmp_path / "renamed.mcap") as reader:
            list(reader.frames())


def test_writer_refuses_inconsistent_input(tmp_path: Path) -> None:
    slash = Rig([CameraModel("front/left", W, H, 50.0, 50.0, 31.5, 23.5)])
    with pytest.raises(DriveError, match="camera name 'front/left' cannot be part of a topic name"):
        DriveWriter(tmp_path / "slash.mcap", slash)
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        with pytest.raises(DriveError, match="camera 'rear' is not in the rig"):
            writer.write_frame("rear", 0, marked(1))
        with pytest.raises(DriveError, match="frame is 32x48, the rig's calibration is 64x48"):
            writer.write_frame("front", 0, Frame.from_bgr(np.zeros((H, W // 2, 3), np.uint8)))
        with pytest.raises(DriveError, match="not a JPEG"):
            writer.write_frame("front", 0, b"\x89PNG\r\n\x1a\n")
        writer.write_frame("front", 100, padded_frame(PixelFormat.NV12, np.random.default_rng(0)))
        with pytest.raises(DriveError, match="frame time 100 ns is not after the previous frame's 100 ns"):
            writer.write_frame("front", 100, padded_frame(PixelFormat.NV12, np.random.default_rng(0)))
        bt709 = ColorSpec(ColorMatrix.BT709)
        with pytest.raises(DriveError, match="colour spec or format of a camera cannot change"):
            writer.write_frame("front", 200, padded_frame(PixelFormat.NV12, np.random.default_rng(0), bt709))
        with pytest.raises(DriveError, match="carries foxglove.RawImage, cannot write a foxglove.CompressedImage"):
            writer.write_frame("front", 300, cv2.imencode(".jpg", np.zeros((H, W, 3), np.uint8))[1].tobytes())
        with pytest.raises(DriveError, match="time must be an integer"):
            writer.write_ego(-1, 2.0)
        with pytest.raises(DriveError, match="speed must be finite"):
            writer.write_ego(0, float("nan"))


def test_open_drive_recognises_our_drive(tmp_path: Path) -> None:
    with DriveWriter(tmp_path / "d.mcap", make_rig("front")) as writer:
        writer.write_frame("front", 10, marked(3))
    with open_drive(tmp_path / "d.mcap") as drive:
        assert isinstance(drive, DriveReader)
        assert [f.t_ns for f in drive.frames()] == [10]


def test_a_lying_length_inside_a_record_is_a_clear_error_not_a_huge_allocation(tmp_path: Path) -> None:
    """Record fields carry their own lengths (an attachment's data length): one flipped high bit once asked
    the file for exabytes (MemoryError). Reads are clamped to the file, so it is a damaged record."""
    import struct

    path = tmp_path / "d.mcap"
    rig = Rig([CameraModel("front", 32, 24, 30.0, 30.0, 15.5, 11.5)])
    with DriveWriter(path, rig) as writer:
        writer.write_frame("front", 0, Frame.from_bgr(np.zeros((24, 32, 3), np.uint8)))
    data = bytearray(path.read_bytes())
    f = McapFile(path)
    (index,) = f.summary.attachment_indexes
    f.close()
    # attachment record: opcode, record length, log / create time, name, media type, data length, data
    at = index.offset + 1 + 8 + 8 + 8 + 4 + len(index.name) + 4 + len(index.media_type)
    assert struct.unpack_from("<Q", data, at)[0] > 0
    struct.pack_into("<Q", data, at, 1 << 62)
    path.write_bytes(bytes(data))
    with pytest.raises(DriveError, match=r"d\.mcap: corrupt attachment"):
        open_drive(path)


def test_a_chunk_index_naming_an_unknown_channel_is_read_not_a_key_error(tmp_path: Path) -> None:
    """A damaged chunk index (its channel id) made the mcap library's chunk filter raise KeyError."""
    import struct

    from mcap.opcode import Opcode

    path = tmp_path / "d.mcap"
    with DriveWriter(path, make_rig("front")) as writer:
        for i in range(3):
            writer.write_frame("front", i * 100, marked(i))
    data = bytearray(path.read_bytes())
    summary_start = struct.unpack_from("<Q", data, len(data) - 8 - 4 - 8 - 8)[0]   # footer: summary start
    at, damaged = summary_start, 0
    while data[at] != Opcode.FOOTER:
        length = struct.unpack_from("<Q", data, at + 1)[0]
        if data[at] == Opcode.CHUNK_INDEX:   # body: 4 x u64, then the message index map: u32 bytes, u16 id ...
            struct.pack_into("<H", data, at + 9 + 32 + 4, 999)
            damaged += 1
        at += 9 + length
    assert damaged >= 1
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with DriveReader(path) as reader:
            assert len(list(reader.frames())) == 3   # the chunks are read: what is in them decides


def test_a_zstd_frame_declaring_a_huge_size_is_a_damaged_chunk_not_a_huge_allocation(tmp_path: Path) -> None:
    """zstandard allocates the content size a frame header declares: a damaged header (a byte of 0xC0 where
    the frame header descriptor is) once asked for exabytes. The chunk is skipped as damaged."""
    path = tmp_path / "d.mcap"
    with DriveWriter(path, make_rig("front")) as writer:
        for i in range(3):
            writer.write_frame("front", i * 100, marked(i))
    data = bytearray(path.read_bytes())
    at = data.index(b"\x28\xb5\x2f\xfd")   # the first chunk's zstd frame (the rig attachment is not compressed)
    data[at + 4] = 0xC0                    # frame header descriptor: an 8-byte content size follows
    data[at + 5: at + 13] = (1 << 62).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadChunkWarning)
        with pytest.raises(DriveError, match=r"d\.mcap: no readable frame"):
            with DriveReader(path) as reader:
                list(reader.frames())
