"""Messages the node publishes over ZeroMQ (docs/messages.md): topics table, msgpack schemas,
publisher, and the subscriber library planning stacks use."""

from perception.messaging.codec import decode, encode
from perception.messaging.curve import CurveClientKeys, CurveServerKeys, create_keys
from perception.messaging.liveness import Liveness, LivenessStatus
from perception.messaging.publisher import Publisher
from perception.messaging.schemas import (
    BRAKE_STAGES, CAMERA_STATES, HEALTH_STATES, DetectionsMessage, Diagnostics, Envelope, HealthMessage, HintsMessage,
    Message, RangeSource, WireLead, WireObjects,
)
from perception.messaging.services import DEFAULT_ENDPOINT, SERVICES, Service
from perception.messaging.subscriber import Subscriber, TopicStats

__all__ = [
    "BRAKE_STAGES", "CAMERA_STATES", "DEFAULT_ENDPOINT", "HEALTH_STATES", "SERVICES", "CurveClientKeys",
    "CurveServerKeys", "DetectionsMessage", "Diagnostics", "Envelope", "HealthMessage", "HintsMessage",
    "Liveness", "LivenessStatus", "Message", "Publisher", "RangeSource", "Service", "Subscriber", "TopicStats",
    "WireLead", "WireObjects", "create_keys", "decode", "encode",
]
