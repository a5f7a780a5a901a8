"""A Foxglove WebSocket server (the `foxglove-sdk` package) streaming the node's outputs while it runs
(`perception run --foxglove [HOST:PORT]`, docs/foxglove.md).

    live = FoxgloveLive(rig, "127.0.0.1", 8765)   # a Sink (perception/node/sinks.py)
    live.write(outputs)     # every frame set's NodeOutputs (images from outputs.frame_set)
    live.close()

The topics and messages are those of run files (perception/io/foxglove_out.py): JPEG camera images
(`foxglove.CompressedImage`), box annotations, the 3D scene, `/tf`, hints and health as JSON, each at its
frame time. `write` never blocks the node: it hands the frame set to a worker thread through a bounded
queue, and a frame set that finds the queue full is dropped and counted (`drops`), as the ZeroMQ
publisher counts its drops. The worker does the encoding (JPEG, protobuf, JSON) off the node's thread;
the SDK itself drops messages for a client that reads too slowly.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable

import foxglove
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from google.protobuf.message import Message as ProtobufMessage
from mcap_protobuf.schema import build_file_descriptor_set

from calib.rig import Rig
from perception.errors import ConfigError, DriveError
from perception.io import foxglove_out as fox
from perception.io.drive import image_topic
from perception.io.drive_images import encode_jpeg
from perception.messaging.schemas import HealthMessage
from perception.node.node import NodeOutputs
from perception.node.sinks import Sink

log = logging.getLogger(__name__)
DEFAULT_ADDRESS = "127.0.0.1:8765"


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `HOST` or `:PORT` (defaults from DEFAULT_ADDRESS) -> (host, port)."""
    default_host, default_port = DEFAULT_ADDRESS.rsplit(":", 1)
    host, sep, port = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        number = int(port) if sep else int(default_port)
    except ValueError:
        raise ConfigError(f"--foxglove {text!r}: the port must be a number (HOST:PORT, e.g. {DEFAULT_ADDRESS})") \
            from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"--foxglove {text!r}: port {number} is outside 0..65535")
    return host or default_host, number


class FoxgloveLive(Sink):
    """The live server. `port=0` picks a free port (`self.port` says which)."""

    def __init__(self, rig: Rig, host: str = "127.0.0.1", port: int = 8765, *, queue_size: int = 4,
                 jpeg_quality: int = 80):
        self.rig = rig
        self.jpeg_quality = jpeg_quality
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(name="perception", host=host, port=port, context=self._context)
        except Exception as e:  # the SDK raises its own error types for a busy or invalid address
            raise ConfigError(f"Foxglove server: cannot listen on {host}:{port}: {e}") from None
        self.port = self._server.port
        self.name = f"foxglove ws://{host}:{self.port}"
        self._channels: dict[str, foxglove.Channel] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._drops = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="foxglove-live", daemon=True)
        self._thread.start()
        log.info("Foxglove live view on ws://%s:%d (open it in Foxglove: Open connection)", host, self.port)

    @property
    def drops(self) -> int:
        """Frame sets not streamed because the worker was still busy with earlier ones."""
        return self._drops

    def write(self, outputs: NodeOutputs) -> None:
        """Queues one frame set for streaming; drops it (counted) when the queue is full."""
        self._offer(("outputs", outputs))

    def idle(self, health: HealthMessage) -> None:
        self._offer(("health", health))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._server.stop()

    def __enter__(self) -> "FoxgloveLive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _offer(self, item: tuple) -> None:
        if self._closed:
            raise DriveError(f"{self.name}: the server is closed")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._drops += 1

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, message = item
            try:
                if kind == "health":
                    self._health(message)
                else:
                    self._frame_set(message)
            except Exception:  # a bad frame set must not end the stream; the node keeps running
                log.exception("Foxglove live: could not stream a frame set")

    def _frame_set(self, outputs: NodeOutputs) -> None:
        detections = outputs.detections
        t_ns = detections.frame_ns
        self._proto(fox.TRANSFORMS_TOPIC, t_ns, fox.frame_transforms(self.rig, t_ns))
        frames = outputs.frame_set.frames if outputs.frame_set is not None else {}
        for camera, captured in frames.items():
            if captured is None:   # stale: its last image was streamed with it
                continue
            image = CompressedImage(frame_id=camera, format="jpeg",
                                    data=encode_jpeg(captured.frame, self.jpeg_quality))
            image.timestamp.FromNanoseconds(captured.t_ns)
            self._proto(image_topic(camera), captured.t_ns, image)
        for camera, (capture_ns, boxes) in fox.image_annotations(detections).items():
            self._proto(fox.annotations_topic(camera), capture_ns, boxes)
        self._proto(fox.SCENE_TOPIC, t_ns, fox.scene_update(detections))
        self._json(fox.HINTS_JSON_TOPIC, t_ns, fox.hints_json(outputs.hints), fox.HINTS_SCHEMA)
        if outputs.health is not None:
            self._health(outputs.health)

    def _health(self, health: HealthMessage) -> None:
        t_ns = int(health.diag.capture_ns.max()) if len(health.diag.capture_ns) else 0
        self._json(fox.HEALTH_JSON_TOPIC, max(t_ns, 0), fox.health_json(health), fox.HEALTH_SCHEMA)

    def _proto(self, topic: str, t_ns: int, message: ProtobufMessage) -> None:
        cls = type(message)
        channel = self._channel(topic, lambda: foxglove.Schema(
            name=cls.DESCRIPTOR.full_name, encoding="protobuf",
            data=build_file_descriptor_set(cls).SerializeToString()), "protobuf")
        channel.log(message.SerializeToString(), log_time=t_ns)

    def _json(self, topic: str, t_ns: int, data: bytes, schema: dict) -> None:
        channel = self._channel(topic, lambda: foxglove.Schema(
            name=schema["title"], encoding="jsonschema", data=json.dumps(schema).encode()), "json")
        channel.log(data, log_time=t_ns)

    def _channel(self, topic: str, schema: Callable[[], foxglove.Schema], encoding: str) -> foxglove.Channel:
        channel = self._channels.get(topic)
        if channel is None:
            channel = self._channels[topic] = foxglove.Channel(topic, schema=schema(), message_encoding=encoding,
                                                               context=self._context)
        return channel


__all__ = ["DEFAULT_ADDRESS", "FoxgloveLive", "parse_address"]
