"""Publisher and Subscriber over real ZeroMQ sockets on loopback (tcp 127.0.0.1 and ipc in tmp dirs)."""

from __future__ import annotations

import time

import pytest
import zmq

from perception.errors import ConfigError, MessageError
from perception.labels import CLASSES
from perception.messaging import (
    SERVICES, CurveClientKeys, CurveServerKeys, DetectionsMessage, HealthMessage, HintsMessage, Publisher,
    Subscriber, create_keys, encode,
)
from perception.messaging.services import topic_prefix
from tests.test_messaging_codec import (
    assert_same_objects, repack, sample_detections, sample_diag, sample_health, sample_hints, sample_objects,
)


def connect(pub_send, sub: Subscriber, tries: int = 400) -> int:
    """Publish until `sub` receives (ZeroMQ's slow joiner), drain what is queued; the last seq received."""
    for _ in range(tries):
        pub_send()
        if (env := sub.recv(timeout_s=0.01)) is not None:
            break
    else:
        pytest.fail("subscriber never connected")
    last = env.seq
    while (env := sub.recv(timeout_s=0.05)) is not None:
        last = env.seq
    return last


@pytest.fixture
def ipc_endpoint(tmp_path):
    return f"ipc://{tmp_path}/perception.sock"


def test_round_trip_all_topics_tcp():
    with Publisher("tcp://127.0.0.1:*") as pub, Subscriber(pub.endpoint) as sub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")
        connect(lambda: pub.publish(sample_health()), sub)
        det, hints, health = sample_detections(9), sample_hints(), sample_health()
        for m in (det, hints, health):
            assert pub.publish(m)
        got = {}
        while len(got) < 3:
            env = sub.recv(timeout_s=5)
            assert env is not None, f"only received {sorted(got)}"
            got[env.topic] = env
    assert isinstance(got["detections"].message, DetectionsMessage)
    assert_same_objects(got["detections"].message.objects, det.objects)
    assert isinstance(got["hints"].message, HintsMessage) and got["hints"].message.lead == hints.lead
    assert isinstance(got["health"].message, HealthMessage) and got["health"].message.camera_states == ("ok", "ok", "lost")
    assert got["detections"].seq == 0 and got["hints"].seq == 0  # sequence numbers are per topic
    assert got["health"].seq > 0
    assert all(s.bad == 0 for s in sub.stats.values())


def test_publish_time_from_injected_clock(ipc_endpoint):
    with Publisher(ipc_endpoint, clock=lambda: 123_456_789) as pub, Subscriber(ipc_endpoint, ["hints"]) as sub:
        connect(lambda: pub.publish(sample_hints()), sub)
        pub.publish(sample_hints())
        env = sub.recv(timeout_s=5)
    assert env.publish_ns == 123_456_789


def test_topic_filter(ipc_endpoint):
    with Publisher(ipc_endpoint) as pub, Subscriber(ipc_endpoint, ["hints"]) as sub:
        connect(lambda: pub.publish(sample_hints()), sub)
        for _ in range(5):
            pub.publish(sample_health())
            pub.publish(sample_detections())
        pub.publish(sample_hints())
        topics = []
        while (env := sub.recv(timeout_s=0.5)) is not None:
            topics.append(env.topic)
    assert topics == ["hints"]


def test_conflate_keeps_only_the_latest_of_each_topic(ipc_endpoint):
    with Publisher(ipc_endpoint) as pub, Subscriber(ipc_endpoint, ["detections", "hints"], conflate=True) as sub:
        connect(lambda: pub.publish(sample_hints()), sub)
        connect(lambda: pub.publish(sample_detections()), sub)
        for _ in range(50):
            pub.publish(sample_detections())
            pub.publish(sample_hints())
        last = {"detections": pub.sent["detections"] - 1, "hints": pub.sent["hints"] - 1}
        time.sleep(0.2)  # let the messages cross the socket; conflate then holds the last one only
        got = {"detections": [], "hints": []}
        for _ in range(100):  # until the last of both topics arrived (normally the first two reads)
            if (env := sub.recv(timeout_s=0.1)) is not None:
                got[env.topic].append(env.seq)
            if all(seqs and seqs[-1] == last[t] for t, seqs in got.items()):
                break
    for topic, seqs in got.items():
        assert seqs[-1] == last[topic]
        assert len(seqs) <= 3, f"{topic}: conflate should leave only the latest, got {seqs}"  # usually 1 of 50
    assert sub.liveness("hints").missed >= 47  # the conflated messages show as sequence gaps


def test_bad_messages_are_counted_and_the_subscriber_goes_on(ipc_endpoint):
    """Malformed, oversized, wrong-version and wrong-typed messages from a raw PUB socket."""
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.linger = 0
    raw.bind(ipc_endpoint)
    valid = encode(sample_hints(), 7, 0)
    try:
        with Subscriber(ipc_endpoint, ["hints"]) as sub:
            connect(lambda: raw.send(valid), sub)
            bad = [
                b"hints\0\xc1\xc1",                                                  # not msgpack
                topic_prefix("hints") + b"\0" * SERVICES["hints"].max_bytes,        # oversized
                repack(valid, lambda d: d.update(schema=99)),                       # wrong version
                repack(valid, lambda d: d["diag"].update(stage_ns={b"engine": "x"})),  # bin map key
                repack(valid, lambda d: d.update(confidence="high")),               # wrong type
            ]
            for frame in bad:
                raw.send(frame)
            raw.send(encode(sample_hints(lead=False), 8, 0))
            env = sub.recv(timeout_s=5)
            assert env is not None and env.seq == 8 and env.message.lead is None
            stats = sub.stats["hints"]
            assert stats.bad == 5
            assert isinstance(stats.last_error, MessageError)
            assert str(stats.last_error) == "hints: field 'confidence' must be a number, got str"
    finally:
        raw.close()
        ctx.term()


def test_subscriber_that_never_reads_does_not_block_the_publisher(ipc_endpoint):
    n = 3000
    big = DetectionsMessage(sample_diag(), 0, [False] * 3, CLASSES, sample_objects(150))  # ~11 KB
    with Publisher(ipc_endpoint, sndhwm=8) as pub, Subscriber(ipc_endpoint, ["detections"], rcvhwm=8) as sub:
        last_seq = connect(lambda: pub.publish(big), sub)
        missed_before = sub.liveness("detections").missed
        first = pub.sent["detections"]
        for _ in range(n):  # ~33 MB while nobody reads: must return, not block
            pub.publish(big)
        assert pub.sent["detections"] == first + n
        seqs = []
        while (env := sub.recv(timeout_s=0.5)) is not None:
            seqs.append(env.seq)
        # what the queues held may end before the flood did: one more publication shows the gap
        pub.publish(big)
        env = sub.recv(timeout_s=5)
        assert env is not None
        seqs.append(env.seq)
    assert 1 < len(seqs) < n
    assert seqs == sorted(seqs) and seqs[0] > last_seq
    # every publication is either received or counted as missed by the subscriber
    missed = sub.liveness("detections").missed - missed_before
    assert missed == seqs[-1] - last_seq - len(seqs) and missed > 0


def test_publisher_counts_a_message_it_cannot_encode(ipc_endpoint):
    with Publisher(ipc_endpoint) as pub:
        too_big = DetectionsMessage(sample_diag(), 0, [False] * 3, CLASSES, sample_objects(20_000))
        with pytest.raises(MessageError, match="detections: message of"):
            pub.publish(too_big)
        assert pub.dropped["detections"] == 1 and pub.sent["detections"] == 0
        assert pub.publish(sample_detections())


def test_bind_and_topic_errors(tmp_path):
    with Publisher("tcp://127.0.0.1:*") as pub:
        with pytest.raises(ConfigError, match="publisher cannot bind 'tcp://127.0.0.1:"):
            Publisher(pub.endpoint)
    with pytest.raises(ConfigError, match="publisher cannot bind 'bogus://x'"):
        Publisher("bogus://x")
    with pytest.raises(ConfigError, match=r"subscriber topics \['lidar'\]"):
        Subscriber("tcp://127.0.0.1:1", ["lidar"])
    with pytest.raises(ConfigError, match="subscriber cannot connect to 'nope'"):
        Subscriber("nope")


def test_liveness_through_the_subscriber_with_an_injected_clock(ipc_endpoint):
    clock = FakeClock()
    with Publisher(ipc_endpoint) as pub, Subscriber(ipc_endpoint, ["health"], clock=clock) as sub:
        connect(lambda: pub.publish(sample_health()), sub)
        assert sub.liveness("health").alive  # the connect messages arrived at t = 0
        clock.t = 10.0  # out of the rate window: the burst of connect messages does not count
        for i in range(8):
            clock.t += 0.5  # 2 Hz, the nominal rate of health
            pub.publish(sample_health())
            assert sub.recv(timeout_s=5) is not None
        status = sub.liveness("health")
        assert status.alive and status.freq_ok and status.rate_hz == pytest.approx(2.0) and status.missed == 0
        clock.t += 2.4
        assert sub.liveness("health").alive  # 4.8 periods without a message
        clock.t += 0.2
        status = sub.liveness("health")
        assert not status.alive and not status.freq_ok and status.age_s == pytest.approx(2.6)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _curve_setup(tmp_path):
    server_public, server_secret = create_keys(tmp_path / "server", "publisher")
    _, good_secret = create_keys(tmp_path / "good", "planner")
    _, evil_secret = create_keys(tmp_path / "evil", "intruder")
    clients = tmp_path / "authorised"
    clients.mkdir()
    (clients / "planner.key").write_bytes((tmp_path / "good" / "planner.key").read_bytes())
    return CurveServerKeys(server_secret, clients), server_public, good_secret, evil_secret


def test_curve_authorised_client_receives_others_do_not(tmp_path):
    server_keys, server_public, good_secret, evil_secret = _curve_setup(tmp_path)
    with Publisher("tcp://127.0.0.1:*", curve=server_keys) as pub:
        good = Subscriber(pub.endpoint, ["hints"], curve=CurveClientKeys(good_secret, server_public))
        evil = Subscriber(pub.endpoint, ["hints"], curve=CurveClientKeys(evil_secret, server_public))
        plain = Subscriber(pub.endpoint, ["hints"])
        try:
            received = 0
            for _ in range(500):
                pub.publish(sample_hints())
                if good.recv(timeout_s=0.01) is not None:
                    received += 1
                    if received == 20:
                        break
            assert received == 20, "the authorised client did not receive"
            assert evil.recv(timeout_s=0.2) is None and evil.stats["hints"].received == 0
            assert plain.recv(timeout_s=0) is None and plain.stats["hints"].received == 0
        finally:
            for s in (good, evil, plain):
                s.close()


def test_curve_key_file_errors(tmp_path):
    server_keys, server_public, good_secret, _ = _curve_setup(tmp_path)
    with pytest.raises(ConfigError, match=r"CURVE certificate .*publisher.key: has no secret key"):
        Publisher("tcp://127.0.0.1:*", curve=CurveServerKeys(server_public, server_keys.clients_dir))
    with pytest.raises(ConfigError, match=r"CURVE clients directory .*missing does not exist"):
        Publisher("tcp://127.0.0.1:*", curve=CurveServerKeys(server_keys.secret_file, tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"CURVE certificate .*nothere.key_secret"):
        Subscriber("tcp://127.0.0.1:1", curve=CurveClientKeys(tmp_path / "nothere.key_secret", server_public))
