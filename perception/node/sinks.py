"""Where the node's outputs go: the `Sink` interface and the two sinks of the core.

    sink.write(outputs)      # every frame set's NodeOutputs, in order
    sink.idle(health)        # a health message while no frame set arrives (wall time; live sinks only)
    sink.drops               # messages this sink could not deliver so far (reported in health)
    sink.close()

`PublisherSink` publishes on ZeroMQ (perception/messaging/publisher.py); `RecorderSink` writes a run file
(perception/io/record.py). Other writers (a Foxglove live server, ROS 2 bags) subclass `Sink` the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from perception.io.record import RunRecorder
from perception.messaging.publisher import Publisher
from perception.messaging.schemas import HealthMessage
from perception.node.node import NodeOutputs


class Sink(ABC):
    name: str  # what and where, for logs: "zmq tcp://127.0.0.1:7450", "run file run.mcap"

    @abstractmethod
    def write(self, outputs: NodeOutputs) -> None:
        """One frame set's outputs; must not block on a slow consumer (drop and count instead)."""

    def idle(self, health: HealthMessage) -> None:
        """A health message sent while no frame set arrives; recorders ignore it (it is stamped by wall time)."""

    @property
    def drops(self) -> int:
        return 0

    def close(self) -> None:
        """Flush and release (idempotent)."""


class PublisherSink(Sink):
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.name = f"zmq {publisher.endpoint}"

    def write(self, outputs: NodeOutputs) -> None:
        for message in outputs.messages():
            self.publisher.publish(message)

    def idle(self, health: HealthMessage) -> None:
        self.publisher.publish(health)

    @property
    def drops(self) -> int:
        return sum(self.publisher.dropped.values())

    def close(self) -> None:
        self.publisher.close()


class RecorderSink(Sink):
    def __init__(self, recorder: RunRecorder) -> None:
        self.recorder = recorder
        self.name = f"run file {recorder.path}"

    def write(self, outputs: NodeOutputs) -> None:
        for message in outputs.messages():
            self.recorder.write(message)

    def close(self) -> None:
        self.recorder.close()
