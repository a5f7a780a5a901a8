"""The Foxglove live server, checked with a real WebSocket client on loopback speaking the Foxglove
WebSocket protocol (subprotocol foxglove.sdk.v1): advertise, subscribe, binary message data decoded from the
advertised schemas."""

from __future__ import annotations

import asyncio
import dataclasses
import base64
import json
import struct

import numpy as np
import pytest
import websockets
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from perception.errors import ConfigError
from perception.frame import Frame
from perception.io.foxglove_live import FoxgloveLive, parse_address
from perception.messaging.schemas import DetectionsMessage, HealthMessage, HintsMessage
from perception.node.node import NodeOutputs
from perception.sources.slot import CapturedFrame
from perception.sources.sync import FrameSet
from tests.test_replay_support import simulated_outputs, small_rig, write_drive

EXPECTED = {"/tf", "/perception/scene", "/perception/hints/json", "/perception/health/json",
            "/camera/front/image", "/camera/front/annotations", "/camera/front_left/image"}


@pytest.fixture(scope="module")
def frame_sets(tmp_path_factory):
    """NodeOutputs of a simulated node, with each frame set's camera images; the first carries a health
    message (the node sends health at a lower rate)."""
    drive = write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap", frames=12)
    messages = simulated_outputs(drive)
    health = next(m for m in messages if isinstance(m, HealthMessage))
    detections = [m for m in messages if isinstance(m, DetectionsMessage)]
    hints = [m for m in messages if isinstance(m, HintsMessage)]
    image = Frame.from_bgr(np.full((240, 320, 3), 90, np.uint8))
    return [NodeOutputs(d, h, health if k == 0 else None, {}, FrameSet(
                k, d.frame_ns, {c: CapturedFrame(c, int(t), image, k) for c, t in zip(d.diag.cameras, d.diag.capture_ns)}))
            for k, (d, h) in enumerate(zip(detections, hints))][:6]


def _decoder(channel: dict):
    if channel["encoding"] == "json":
        return json.loads
    files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"])).FromString


async def _client(port: int, live: FoxgloveLive, frame_sets) -> dict[str, list]:
    async with websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"]) as ws:
        channels: dict[int, dict] = {}
        received: dict[str, list] = {}
        live.write(frame_sets[0])             # the channels are advertised when first used
        while not EXPECTED <= {c["topic"] for c in channels.values()}:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["op"] == "advertise":
                channels.update({c["id"]: c for c in message["channels"]})
        await asyncio.sleep(0.3)
        subscriptions = {i: c for i, c in enumerate(channels.values(), 1)}
        await ws.send(json.dumps({"op": "subscribe", "subscriptions": [
            {"id": i, "channelId": c["id"]} for i, c in subscriptions.items()]}))
        await asyncio.sleep(0.5)               # the server applies the subscriptions
        for frame_set in frame_sets[1:]:
            live.write(frame_set)
        live.idle(frame_sets[0].health)     # health while no frame set arrives
        want = len(frame_sets) - 1
        while min(len(received.get(t, [])) for t in ("/perception/scene", "/camera/front/image",
                                                     "/perception/hints/json")) < want \
                or not received.get("/perception/health/json"):
            data = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(data, str):
                continue
            opcode, sub, t_ns = struct.unpack_from("<BIQ", data)
            assert opcode == 1
            channel = subscriptions[sub]
            received.setdefault(channel["topic"], []).append((t_ns, _decoder(channel)(data[13:])))
        return received


def test_a_websocket_client_subscribes_and_decodes(frame_sets):
    with FoxgloveLive(small_rig(), "127.0.0.1", 0, queue_size=16) as live:
        received = asyncio.run(_client(live.port, live, frame_sets))
        assert live.drops == 0
    later = frame_sets[1:]
    scenes = received["/perception/scene"]
    assert [t for t, _ in scenes] == [o.detections.frame_ns for o in later]
    for (_, scene), outputs in zip(scenes, later):
        placed = np.isfinite(outputs.detections.objects.position).all(1)
        assert [e.id for e in scene.entities] == [f"track/{i}" for i in outputs.detections.objects.track_id[placed]]
    images = received["/camera/front/image"]
    assert images[0][1].format == "jpeg" and images[0][1].data[:3] == b"\xff\xd8\xff"
    assert images[0][1].frame_id == "front"
    assert [t for t, _ in images] == [o.frame_set.frames["front"].t_ns for o in later]
    tf = received["/tf"][0][1]
    assert [t.child_frame_id for t in tf.transforms] == ["front", "front_left"]
    hints = received["/perception/hints/json"]
    assert [h["frame_ns"] for _, h in hints] == [o.hints.frame_ns for o in later]
    assert received["/camera/front/annotations"]
    (_, health), = received["/perception/health/json"]
    assert health["state"] == frame_sets[0].health.state and set(health["cameras"]) == {"front", "front_left"}


def test_a_full_queue_drops_and_counts(frame_sets):
    big = Frame.from_bgr(np.zeros((1080, 1920, 3), np.uint8))
    outputs = frame_sets[0]
    heavy = dataclasses.replace(outputs, frame_set=dataclasses.replace(outputs.frame_set, frames={
        c: dataclasses.replace(f, frame=big) for c, f in outputs.frame_set.frames.items()}))
    with FoxgloveLive(small_rig(), "127.0.0.1", 0, queue_size=1) as live:
        for _ in range(50):                     # each set costs the worker two full-HD JPEG encodes
            live.write(heavy)
        assert live.drops > 0
    with pytest.raises(Exception, match="closed"):
        live.write(heavy)


def test_addresses():
    assert parse_address("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_address(":9000") == ("127.0.0.1", 9000)
    assert parse_address("localhost") == ("localhost", 8765)
    with pytest.raises(ConfigError, match="port must be a number"):
        parse_address("host:abc")
    with pytest.raises(ConfigError, match="outside"):
        parse_address("host:70000")
