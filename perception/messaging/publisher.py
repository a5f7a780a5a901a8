"""The node's ZeroMQ PUB socket: never blocks the loop, counts what it could not send.

A PUB socket drops a message silently for a subscriber whose queue (SNDHWM messages, plus the kernel's
socket buffers) is full; the others still get it. The publisher cannot see those per-subscriber drops,
so every message carries a per-topic sequence number and subscribers count the gaps
(perception.messaging.liveness). What the publisher itself sees (zmq.Again, an encoding over the
size limit) it counts in `dropped` and reports to the caller. Not thread-safe: one thread publishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from perception.errors import ConfigError, MessageError
from perception.messaging.codec import encode
from perception.messaging.curve import CurveServerKeys, start_server
from perception.messaging.schemas import TOPIC_OF, Message
from perception.messaging.services import DEFAULT_ENDPOINT, SERVICES


def pub_socket(context: zmq.Context, sndhwm: int) -> zmq.Socket:
    """The PUB socket with the publisher's options (also the bare baseline of benchmarks/messaging.py)."""
    socket = context.socket(zmq.PUB)
    socket.linger = 0
    socket.sndhwm = sndhwm
    return socket


class Publisher:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, sndhwm: int = 64, curve: CurveServerKeys | None = None,
                 clock: Callable[[], int] = time.time_ns):
        """Bind `endpoint` (tcp://HOST:PORT, tcp://HOST:* for a free port, or ipc://PATH).
        `clock` stamps publish_ns (ns); the default, CLOCK_REALTIME, compares across hosts synchronised
        by PTP and is only used for latency diagnostics."""
        self._context = zmq.Context()
        self._socket = pub_socket(self._context, sndhwm)
        self._authenticator = None
        try:
            if curve is not None:
                self._authenticator = start_server(self._context, self._socket, curve)
            self._socket.bind(endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise ConfigError(f"publisher cannot bind {endpoint!r}: {e}") from None
        except ConfigError:
            self.close()
            raise
        self._clock = clock
        self._next_seq = dict.fromkeys(SERVICES, 0)
        self.sent = dict.fromkeys(SERVICES, 0)
        self.dropped = dict.fromkeys(SERVICES, 0)

    @property
    def endpoint(self) -> str:
        """The bound endpoint, with the port the system chose for `tcp://HOST:*`."""
        return self._socket.last_endpoint.decode()

    def publish(self, message: Message) -> bool:
        """Send without blocking; False (and counted in `dropped`) if ZeroMQ refused it. Raises MessageError
        if the message exceeds its topic's size limit (also counted)."""
        topic = TOPIC_OF[type(message)]
        seq = self._next_seq[topic]
        self._next_seq[topic] = seq + 1  # advance even on a drop: subscribers see the gap
        try:
            frame = encode(message, seq, self._clock())
            self._socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped[topic] += 1
            return False
        except MessageError:
            self.dropped[topic] += 1
            raise
        self.sent[topic] += 1
        return True

    def close(self) -> None:
        if self._context.closed:
            return
        self._socket.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
