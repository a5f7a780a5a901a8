"""The one table of topics: schema version, nominal rate and size limit of every message (as openpilot's
cereal services.py). Publisher, subscriber, liveness, echo and docs/messages.md all read it from here.

Wire format (docs/messages.md): one single-part ZeroMQ message per publication,
`topic (ASCII) + b"\\0" + msgpack payload`. Single-part because ZMQ_CONFLATE does not support multipart
messages; the NUL ends the topic so a subscription to `b"hints\\0"` cannot match a longer topic name.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ENDPOINT = "tcp://127.0.0.1:7450"


@dataclass(frozen=True)
class Service:
    topic: str
    schema_version: int
    rate_hz: float       # nominal publication rate; per-frame-set topics: the node's nominal frame-set rate
    per_frame_set: bool  # True: one message per frame set; False: fixed rate
    max_bytes: int       # whole ZeroMQ message, topic prefix included; larger messages are rejected
    description: str


SERVICES: dict[str, Service] = {s.topic: s for s in (
    Service("detections", 3, 20.0, True, 1 << 20,  # 2: the object table as one record array; 3: arrays as bin
            "tracked objects of one frame set: boxes, range, vehicle-frame position/velocity, TTC"),
    Service("hints", 3, 20.0, True, 64 << 10,  # 2: lead.range_m -> lead.gap_m (the bumper gap); 3: arrays as bin
            "control hints of one frame set: lead object, brake stage, speed cap, cut-ins, confidence"),
    Service("health", 2, 2.0, False, 64 << 10,  # 2: diag arrays as bin
            "node state ok/degraded/fault with reasons, camera states, latency, rate, drops"),
)}

# msgpack decoder limits for untrusted payloads (per string / list / map; binary arrays are bounded by
# the topic's max_bytes). Every list in a message is short: camera names, reasons, class names.
MAX_STR_LEN = 1024
MAX_LIST_LEN = 64
MAX_MAP_LEN = 64
MAX_OBJECTS = 4096


def topic_prefix(topic: str) -> bytes:
    """The bytes every message of `topic` starts with; also its ZeroMQ subscription."""
    return topic.encode("ascii") + b"\0"
