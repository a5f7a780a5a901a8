import threading
import time

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from perception.errors import ConfigError, MessageError
from perception.frame import Frame, PixelFormat
from perception.sources import CapturedFrame, LatestFrameSlot, LiveSynchronizer, LockstepSynchronizer, SyncConfig
from perception.sources.capture import capture_frames
from perception.sources.framebus import FrameBusPublisher, FrameBusReceiver, decode_frame, encode_frame
from perception.sources.threads import SourceThread

MS = 1_000_000


def _frame(camera: str, t_ns: int, seq: int = 0, value: int = 0) -> CapturedFrame:
    return CapturedFrame(camera, t_ns, Frame.from_bgr(np.full((4, 6, 3), value, np.uint8)), seq)


def test_slot_keeps_newest_and_counts_drops():
    slot = LatestFrameSlot()
    for i in range(5):
        slot.put(_frame("a", i, i))
    assert slot.dropped == 4 and slot.received == 5
    assert slot.take().seq == 4
    assert slot.take() is None


def test_sync_config_validates():
    with pytest.raises(ConfigError, match="sync.anchor"):
        SyncConfig(("a", "b"), "c")
    with pytest.raises(ConfigError, match="duplicate"):
        SyncConfig(("a", "a"), "a")
    with pytest.raises(ConfigError, match="max_skew_ms"):
        SyncConfig(("a",), "a", max_skew_ms=-1)


def _stream(period_ms=100, n=10, jitter=None, missing=()):
    frames = []
    for i in range(n):
        for cam, offset in (("front", 0), ("left", 3), ("right", -4)):
            if (cam, i) in missing:
                continue
            t = i * period_ms * MS + offset * MS + (jitter[i] if jitter is not None else 0)
            frames.append(_frame(cam, t, i))
    return sorted(frames, key=lambda f: f.t_ns)


def test_lockstep_sync_groups_within_skew_and_marks_stale():
    sync = LockstepSynchronizer(SyncConfig(("front", "left", "right"), "front", max_skew_ms=20))
    sets = list(sync.frame_sets(_stream(missing={("left", 4), ("right", 7)})))
    assert [s.seq for s in sets] == list(range(10))
    assert all(s.frames["front"].seq == i for i, s in enumerate(sets))
    assert sets[4].stale == ["left"] and sets[7].stale == ["right"]
    assert sets[3].skew_ns == {"front": 0, "left": 3 * MS, "right": -4 * MS}
    assert all(not s.stale for i, s in enumerate(sets) if i not in (4, 7))
    assert sync.dropped == {"front": 0, "left": 0, "right": 0}


def test_lockstep_sync_counts_frames_that_never_join():
    frames = _stream(n=3) + [_frame("left", 150 * MS, 99)]  # halfway between two anchors: outside skew
    sync = LockstepSynchronizer(SyncConfig(("front", "left", "right"), "front", max_skew_ms=20))
    sets = list(sync.frame_sets(sorted(frames, key=lambda f: f.t_ns)))
    assert len(sets) == 3 and not any(s.stale for s in sets)
    assert sync.dropped["left"] == 1


def test_lockstep_sync_is_deterministic():
    rng = np.random.default_rng(3)
    stream = _stream(n=30, jitter=rng.integers(-8 * MS, 8 * MS, 30))
    runs = []
    for _ in range(2):
        sync = LockstepSynchronizer(SyncConfig(("front", "left", "right"), "front", max_skew_ms=15))
        runs.append([(s.t_ns, tuple((k, v.seq if v else None) for k, v in s.frames.items()))
                     for s in sync.frame_sets(stream)])
    assert runs[0] == runs[1]


def test_live_sync_joins_fresh_frames_and_marks_silent_camera_stale():
    slots = {name: LatestFrameSlot() for name in ("front", "left")}
    sync = LiveSynchronizer(SyncConfig(("front", "left"), "front", max_skew_ms=10), slots)
    slots["left"].put(_frame("left", 102 * MS, 1))
    slots["front"].put(_frame("front", 100 * MS, 1))
    s = sync.next_set(timeout_s=1.0)
    assert s.frames["left"].seq == 1 and s.stale == []
    slots["front"].put(_frame("front", 200 * MS, 2))  # left says nothing new
    s = sync.next_set(timeout_s=1.0)
    assert s.stale == ["left"]
    assert sync.next_set(timeout_s=0.01) is None


def test_source_thread_with_backpressure_delivers_every_frame_in_order():
    slots = {"front": LatestFrameSlot()}

    def produce(stop):
        for i in range(50):
            yield _frame("front", i * MS, i)

    thread = SourceThread("drive", produce, slots, backpressure=True)
    thread.start()
    seqs = []
    while len(seqs) < 50 and slots["front"].wait(2.0):
        seqs.append(slots["front"].take().seq)
    thread.stop()
    assert seqs == list(range(50)) and slots["front"].dropped == 0


def test_framebus_round_trip_over_real_sockets(tmp_path):
    endpoint = f"ipc://{tmp_path}/bus"
    pub = FrameBusPublisher(endpoint)
    receiver = FrameBusReceiver(endpoint, ["front"])
    stop = threading.Event()
    got: list[CapturedFrame] = []

    def consume():
        for f in receiver.frames(stop):
            got.append(f)
            if len(got) == 3:
                stop.set()

    t = threading.Thread(target=consume)
    t.start()
    nv12 = np.arange(8 * 6 * 3 // 2 * 2, dtype=np.uint8)  # stride 16 > width 8
    frame = Frame(nv12[: 16 * 9], 8, 6, 16, PixelFormat.NV12)
    deadline = time.monotonic() + 5
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:  # slow joiner: resend until received
        pub.socket.send_multipart([b"front", msgpack.packb({"v": 1}), b"x"])  # malformed: counted, skipped
        pub.send(CapturedFrame("front", 1000 + i, frame, i))
        pub.send(CapturedFrame("front_left", 5, frame, i))  # prefix of another camera: not delivered
        i += 1
        time.sleep(0.01)
    t.join(2)
    pub.close()
    assert len(got) == 3
    assert all(g.camera == "front" for g in got)
    assert got[0].frame.pixel_format is PixelFormat.NV12 and got[0].frame.stride == 16
    np.testing.assert_array_equal(got[0].frame.rows(), frame.rows())
    assert receiver.bad_messages >= 1 and "t_ns" in receiver.last_error


def test_framebus_decode_rejects_bad_messages():
    good = [bytes(p) for p in encode_frame("cam", _frame("cam", 5, 0))]
    assert decode_frame(good).t_ns == 5
    with pytest.raises(MessageError, match="expected 3"):
        decode_frame(good[:2])
    with pytest.raises(MessageError, match="buffer has"):
        decode_frame([good[0], good[1], good[2][:-1]])
    header = msgpack.unpackb(good[1])
    with pytest.raises(MessageError, match="unsupported version"):
        decode_frame([good[0], msgpack.packb({**header, "v": 9}), good[2]])
    with pytest.raises(MessageError, match="'format'"):
        decode_frame([good[0], msgpack.packb({**header, "format": "mjpeg"}), good[2]])
    with pytest.raises(MessageError, match="'width'"):
        decode_frame([good[0], msgpack.packb({**header, "width": -3}), good[2]])
    with pytest.raises(MessageError, match="not valid msgpack"):
        decode_frame([good[0], b"\xc1\xc1", good[2]])


def test_video_file_capture_is_stamped_by_container_time(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), i * 40, np.uint8))
    writer.release()
    frames = list(capture_frames("front", path, threading.Event()))
    assert len(frames) == 5
    stamps = [f.t_ns for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    assert (stamps[-1] - stamps[0]) == pytest.approx(4 * 20 * MS, rel=0.05)


def test_unopenable_camera_is_a_config_error():
    with pytest.raises(ConfigError, match="could not open"):
        next(capture_frames("front", "/nonexistent/video.mp4", threading.Event()))
