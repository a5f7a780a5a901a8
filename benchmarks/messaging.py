"""Publish -> decode latency of the messaging layer vs bare ZeroMQ sockets, side by side in one run.

Three ways to move the same `detections` message (N objects) from a publisher to a subscriber process:
  bare    the physical floor: pre-built bytes of the same size through PUB/SUB, nothing encoded
  ours    Publisher.publish (encode, binary arrays) -> Subscriber.recv (limits, schema and field checks)
  naive   msgpack with the arrays as lists of floats, unpacked and converted back to numpy arrays
Latency = subscriber's CLOCK_MONOTONIC after decoding - publisher's CLOCK_MONOTONIC before encoding.
Also the encode / decode CPU time alone, without sockets.

    python benchmarks/messaging.py [--objects 32] [--messages 1000] [--rate 500] [--transport ipc tcp]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import struct
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perception.labels import CLASSES  # noqa: E402
from perception.messaging import (  # noqa: E402
    DetectionsMessage, Diagnostics, Publisher, Subscriber, WireObjects, decode, encode,
)
from perception.messaging.schemas import OBJECT_FIELDS  # noqa: E402

PROBE = -1


def make_message(n: int, frame_ns: int) -> DetectionsMessage:
    rng = np.random.default_rng(0)
    objects = WireObjects(**{name: rng.uniform(0, 3, (n, *shape)).astype(dtype)
                                for name, (dtype, shape) in OBJECT_FIELDS.items()})
    diag = Diagnostics("bench", ("front", "left", "right"), [1, 2, 3], [0, 0, 0],
                       {"preprocess": 1, "engine": 2, "track": 3})
    return DetectionsMessage(diag, frame_ns, [False] * 3, CLASSES, objects)


def naive_pack(m: DetectionsMessage, t_ns: int) -> bytes:
    return b"detections\0" + msgpack.packb({
        "t": t_ns, "frame_ns": m.frame_ns, "stale": m.stale.tolist(), "classes": list(m.classes),
        "objects": {name: getattr(m.objects, name).tolist() for name in OBJECT_FIELDS}})


def naive_unpack(frame: bytes) -> tuple[int, int, dict]:
    d = msgpack.unpackb(frame[frame.index(b"\0") + 1:], raw=False)
    arrays = {name: np.asarray(d["objects"][name], dtype) for name, (dtype, _) in OBJECT_FIELDS.items()}
    return d["t"], d["frame_ns"], arrays


def receiver(mode: str, endpoint: str, n: int, conn) -> None:
    latencies = []
    if mode == "ours":
        with Subscriber(endpoint, ["detections"]) as sub:
            while len(latencies) < n:
                env = sub.recv()
                now = time.monotonic_ns()
                if env.message.frame_ns == PROBE:
                    conn.send("ready")
                else:
                    latencies.append(now - env.publish_ns)
    else:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.subscribe(b"detections\0")
        sock.connect(endpoint)
        while len(latencies) < n:
            frame = sock.recv()
            if mode == "bare":
                t_ns, index = struct.unpack_from("<qq", frame, 11)
            else:
                t_ns, index, _ = naive_unpack(frame)
            now = time.monotonic_ns()
            if index == PROBE:
                conn.send("ready")
            else:
                latencies.append(now - t_ns)
        sock.close(linger=0)
        ctx.term()
    conn.send(np.asarray(latencies, np.int64))


def run_mode(mode: str, endpoint: str, n_objects: int, n: int, rate_hz: float) -> np.ndarray:
    size = len(encode(make_message(n_objects, 0), 0, 0))
    real, probe = make_message(n_objects, 0), make_message(n_objects, PROBE)
    ctx = zmq.Context()
    pub = Publisher(endpoint, sndhwm=1000, clock=time.monotonic_ns) if mode == "ours" else None
    raw = None
    if pub is None:
        raw = ctx.socket(zmq.PUB)
        raw.sndhwm = 1000
        raw.bind(endpoint)
        endpoint = raw.last_endpoint.decode()
    else:
        endpoint = pub.endpoint

    def send(message: DetectionsMessage, index: int) -> None:
        if mode == "ours":
            pub.publish(message)
        elif mode == "bare":
            raw.send(b"detections\0" + struct.pack("<qq", time.monotonic_ns(), index) + bytes(size - 27))
        else:
            raw.send(naive_pack(message, time.monotonic_ns()))

    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=receiver, args=(mode, endpoint, n, child))
    proc.start()
    while not parent.poll(0.01):
        send(probe, PROBE)
    time.sleep(0.1)
    while parent.poll(0):
        parent.recv()
    period = 1.0 / rate_hz
    next_t = time.monotonic()
    for i in range(n + 50):  # a few extra in case the first ones crossed a probe
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
        send(real, i)
        if parent.poll(0):
            break
    while True:
        if not parent.poll(10.0):
            proc.terminate()
            raise RuntimeError(f"{mode}: the subscriber did not receive {n} messages")
        result = parent.recv()
        if isinstance(result, np.ndarray):
            break
    proc.join()
    if pub is not None:
        pub.close()
    else:
        raw.close(linger=0)
    ctx.term()
    return result


def cpu_times(n_objects: int, repeats: int = 2000) -> dict[str, tuple[float, float, int]]:
    m = make_message(n_objects, 0)
    ours, naive = encode(m, 0, 0), naive_pack(m, 0)

    def best_us(fn) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats // 5):
                fn()
            best = min(best, (time.perf_counter() - t0) / (repeats // 5))
        return best * 1e6

    return {"ours": (best_us(lambda: encode(m, 0, 0)), best_us(lambda: decode(ours)), len(ours)),
            "naive": (best_us(lambda: naive_pack(m, 0)), best_us(lambda: naive_unpack(naive)), len(naive))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=32)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="publications per second")
    parser.add_argument("--transport", nargs="+", default=["ipc", "tcp"], choices=["ipc", "tcp"])
    args = parser.parse_args()

    cpu = cpu_times(args.objects)
    print(f"detections message, {args.objects} objects: ours {cpu['ours'][2]} bytes, naive {cpu['naive'][2]} bytes")
    print(f"{'':8} {'encode us':>10} {'decode us':>10}")
    for mode in ("ours", "naive"):
        print(f"{mode:8} {cpu[mode][0]:10.1f} {cpu[mode][1]:10.1f}")
    print()
    print(f"publish -> decode latency, {args.messages} messages at {args.rate:.0f} Hz, subscriber in another process")
    print(f"{'transport':9} {'mode':6} {'p50 us':>8} {'p99 us':>8} {'p50 / bare':>11} {'p99 / bare':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in args.transport:
            rows = {}
            for mode in ("bare", "ours", "naive"):
                endpoint = f"ipc://{tmp}/{mode}.sock" if transport == "ipc" else "tcp://127.0.0.1:*"
                lat = run_mode(mode, endpoint, args.objects, args.messages, args.rate) / 1000.0
                rows[mode] = (np.percentile(lat, 50), np.percentile(lat, 99))
            for mode, (p50, p99) in rows.items():
                print(f"{transport:9} {mode:6} {p50:8.0f} {p99:8.0f} {p50 / rows['bare'][0]:11.2f} "
                      f"{p99 / rows['bare'][1]:11.2f}")


if __name__ == "__main__":
    main()
