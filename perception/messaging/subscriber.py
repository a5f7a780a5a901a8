"""Subscriber library for planning stacks: typed messages, size limits, schema check, liveness.

    with Subscriber("tcp://127.0.0.1:7450", ["hints"], conflate=True) as sub:
        while True:
            envelope = sub.recv(timeout_s=0.1)   # a typed Envelope, or None
            status = sub.liveness("hints")       # alive / freq_ok / rate / missed

One SUB socket per topic, so that CONFLATE (which keeps one message per socket) keeps the latest message
of each topic. A message that fails to decode is counted in `stats[topic].bad`, kept as `last_error`,
logged (the 1st, 2nd, 4th, 8th ... of each topic) and skipped; the subscriber goes on. Not thread-safe.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import zmq

from perception.errors import ConfigError, MessageError
from perception.messaging.codec import decode
from perception.messaging.curve import CurveClientKeys, configure_client
from perception.messaging.liveness import Liveness, LivenessStatus
from perception.messaging.schemas import Envelope
from perception.messaging.services import SERVICES, topic_prefix

log = logging.getLogger(__name__)


@dataclass
class TopicStats:
    received: int = 0
    bad: int = 0
    last_error: MessageError | None = None


def sub_socket(context: zmq.Context, topic: str, rcvhwm: int, conflate: bool = False) -> zmq.Socket:
    """A SUB socket of one topic with the subscriber's options, not connected yet (also the bare baseline of
    benchmarks/messaging.py)."""
    socket = context.socket(zmq.SUB)
    socket.linger = 0
    socket.rcvhwm = rcvhwm
    socket.conflate = conflate
    # Bounds memory against a hostile peer (libzmq drops the connection); messages between max_bytes and
    # this are received, counted bad and reported.
    socket.maxmsgsize = 2 * SERVICES[topic].max_bytes
    return socket


class Subscriber:
    def __init__(self, endpoint: str, topics: Sequence[str] | None = None, *, conflate: bool = False,
                 rcvhwm: int = 64, curve: CurveClientKeys | None = None,
                 clock: Callable[[], float] = time.monotonic, rates_hz: Mapping[str, float] | None = None,
                 timeout_periods: float = 5.0, tolerance: float = 0.2):
        """Connect to `endpoint` for `topics` (default: all). `rates_hz` overrides the nominal rates of
        services.py (per-frame-set topics run at the node's frame-set rate); `clock` (monotonic seconds)
        times arrivals for liveness."""
        topics = list(SERVICES) if topics is None else list(topics)
        unknown = [t for t in [*topics, *(rates_hz or {})] if t not in SERVICES]
        if unknown or not topics:
            raise ConfigError(f"subscriber topics {unknown or topics}: not known topics ({', '.join(SERVICES)})")
        rates = {t: SERVICES[t].rate_hz for t in topics} | dict(rates_hz or {})
        self._clock = clock
        self._liveness = {t: Liveness(rates[t], timeout_periods, tolerance) for t in topics}
        self.stats = {t: TopicStats() for t in topics}
        self._context = zmq.Context()
        self._poller = zmq.Poller()
        self._sockets: dict[zmq.Socket, str] = {}
        try:
            for topic in topics:
                socket = sub_socket(self._context, topic, rcvhwm, conflate)
                self._sockets[socket] = topic
                if curve is not None:
                    configure_client(socket, curve)
                socket.subscribe(topic_prefix(topic))
                socket.connect(endpoint)
                self._poller.register(socket, zmq.POLLIN)
        except zmq.ZMQError as e:
            self.close()
            raise ConfigError(f"subscriber cannot connect to {endpoint!r}: {e}") from None
        except ConfigError:
            self.close()
            raise
        self._ready: deque[zmq.Socket] = deque()

    def recv(self, timeout_s: float | None = None) -> Envelope | None:
        """The next valid message of any subscribed topic (round robin between topics), or None after
        `timeout_s` seconds (None: wait forever; 0: do not wait)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            while self._ready:
                socket = self._ready.popleft()
                envelope = self._read(socket)
                if envelope is not None:
                    return envelope
            wait_ms = None if deadline is None else max(0, round((deadline - time.monotonic()) * 1000))
            self._ready.extend(socket for socket, _ in self._poller.poll(wait_ms))
            if not self._ready and deadline is not None and time.monotonic() >= deadline:
                return None

    def liveness(self, topic: str) -> LivenessStatus:
        return self._liveness[topic].status(self._clock())

    def _read(self, socket: zmq.Socket) -> Envelope | None:
        try:
            frame = socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        topic = self._sockets[socket]
        stats = self.stats[topic]
        try:
            envelope = decode(frame)
        except MessageError as e:
            stats.bad += 1
            stats.last_error = e
            if stats.bad & (stats.bad - 1) == 0:
                log.warning("bad %s message #%d skipped: %s", topic, stats.bad, e)
            return None
        stats.received += 1
        self._liveness[topic].on_message(self._clock(), envelope.seq)
        return envelope

    def close(self) -> None:
        if self._context.closed:
            return
        for socket in self._sockets:
            socket.close(linger=0)
        self._context.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
