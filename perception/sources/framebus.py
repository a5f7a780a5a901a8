"""The ZeroMQ frame bus: another process publishes raw frames, one frame per message.

Message (multipart, one ZeroMQ message): [camera name, msgpack header, pixel buffer]
Header: {"v": 1, "t_ns": int, "seq": int, "width": int, "height": int, "stride": int,
         "format": "nv12"|"yuyv"|"bgr8"|"rgb8", "matrix": "bt601"|"bt709", "range": "limited"|"full"}
The subscriber validates every field and the buffer size; a bad message is counted and skipped, and
libzmq drops a peer sending a part larger than MAX_FRAME_BYTES. Optional CURVE (perception/messaging/curve.py):
the camera process's publisher is the server accepting only listed node keys, the node is a client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgpack
import numpy as np
import zmq

from perception.errors import FrameError, MessageError
from perception.frame import ColorMatrix, ColorRange, ColorSpec, Frame, PixelFormat
from perception.messaging.curve import CurveClientKeys, CurveServerKeys, configure_client, start_server
from perception.sources.slot import CapturedFrame

FRAMEBUS_VERSION = 1
MAX_HEADER_BYTES = 4096
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_SIDE = 16384


def encode_frame(camera: str, captured: CapturedFrame) -> list[bytes | memoryview]:
    f = captured.frame
    header = {
        "v": FRAMEBUS_VERSION, "t_ns": captured.t_ns, "seq": captured.seq, "width": f.width,
        "height": f.height, "stride": f.stride, "format": f.pixel_format.value,
        "matrix": f.color.matrix.value, "range": f.color.range.value,
    }
    return [camera.encode(), msgpack.packb(header), memoryview(np.ascontiguousarray(f.data)).cast("B")]


def decode_frame(parts: list[bytes]) -> CapturedFrame:
    """Validate and decode one frame-bus message; raises MessageError naming the field."""
    if len(parts) != 3:
        raise MessageError(f"framebus: expected 3 message parts, got {len(parts)}")
    topic, header_bytes, payload = parts
    try:
        camera = bytes(topic).decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("framebus: camera name is not UTF-8") from None
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise MessageError(f"framebus {camera}: header of {len(header_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(payload) > MAX_FRAME_BYTES:
        raise MessageError(f"framebus {camera}: frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        header = msgpack.unpackb(header_bytes, raw=False, max_str_len=64, max_array_len=0,
                                 max_map_len=16, max_bin_len=0)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for malformed input
        raise MessageError(f"framebus {camera}: header is not valid msgpack ({e})") from None
    if not isinstance(header, dict):
        raise MessageError(f"framebus {camera}: header must be a map")
    if header.get("v") != FRAMEBUS_VERSION:
        raise MessageError(f"framebus {camera}: unsupported version {header.get('v')!r} (expected {FRAMEBUS_VERSION})")
    ints = {}
    for key in ("t_ns", "seq", "width", "height", "stride"):
        value = header.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MessageError(f"framebus {camera}: field {key!r} must be a non-negative integer, got {value!r}")
        ints[key] = value
    if ints["width"] > MAX_SIDE or ints["height"] > MAX_SIDE:
        raise MessageError(f"framebus {camera}: size {ints['width']}x{ints['height']} exceeds {MAX_SIDE}")
    enums = {}
    for key, enum_type, default in (("format", PixelFormat, None), ("matrix", ColorMatrix, "bt601"),
                                    ("range", ColorRange, "limited")):
        try:
            enums[key] = enum_type(header.get(key, default))
        except ValueError:
            allowed = ", ".join(m.value for m in enum_type)
            raise MessageError(f"framebus {camera}: field {key!r} is {header.get(key)!r}, not one of {allowed}") from None
    fmt = enums["format"]
    color = ColorSpec(enums["matrix"], enums["range"])
    try:
        frame = Frame(np.frombuffer(payload, np.uint8), ints["width"], ints["height"], ints["stride"], fmt, color)
    except FrameError as e:
        raise MessageError(f"framebus {camera}: {e}") from None
    return CapturedFrame(camera, ints["t_ns"], frame, ints["seq"])


class FrameBusPublisher:
    """For camera processes (and tests): publishes frames on the bus."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None,
                 curve: CurveServerKeys | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self.socket = self._ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self._authenticator = start_server(self._ctx, self.socket, curve) if curve is not None else None
        self.socket.bind(endpoint)

    def send(self, captured: CapturedFrame) -> None:
        self.socket.send_multipart(encode_frame(captured.camera, captured), copy=False)

    def close(self) -> None:
        self.socket.close()
        if self._authenticator is not None:
            self._authenticator.stop()


class FrameBusReceiver:
    """Subscribes to the bus for a set of cameras; counts malformed messages instead of dying."""

    def __init__(self, endpoint: str, cameras: list[str], context: zmq.Context | None = None,
                 curve: CurveClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.cameras = cameras
        self.bad_messages = 0
        self.last_error: str | None = None
        self._ctx = context or zmq.Context.instance()

    def frames(self, stop: threading.Event) -> Iterator[CapturedFrame]:
        socket = self._ctx.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, 4 * len(self.cameras))
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        if self.curve is not None:
            configure_client(socket, self.curve)
        for camera in self.cameras:
            socket.setsockopt(zmq.SUBSCRIBE, camera.encode())
        socket.connect(self.endpoint)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        try:
            while not stop.is_set():
                if not poller.poll(100):
                    continue
                parts = socket.recv_multipart(copy=True)
                try:
                    captured = decode_frame(parts)
                except MessageError as e:
                    self.bad_messages += 1
                    self.last_error = str(e)
                    continue
                if captured.camera in self.cameras:
                    yield captured
        finally:
            socket.close()
