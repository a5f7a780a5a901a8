"""Publish -> decode latency of the messaging layer vs bare ZeroMQ sockets and vs the old encoding, side by
side in one run.

Three ways to move the same `detections` message (N objects) from a publisher to a subscriber process:
  bare    the physical floor: pre-built bytes of the same size through PUB/SUB, nothing encoded; the same
          socket options as Publisher / Subscriber and the same polling (zmq.Poller, then a non-blocking
          recv), so that the difference to `ours` is the library's own work
  ours    Publisher.publish (encode) -> Subscriber.recv (limits, schema and field checks): this checkout
  old     the same, with the code of BASELINE (detections schema 2: ext-typed per-camera arrays, the object
          table copied and checked with per-column reductions), exported with `git archive` and run by this
          script in a child process
Latency = subscriber's CLOCK_MONOTONIC after decoding - publisher's CLOCK_MONOTONIC before encoding. Where
the time goes, per message: the CPU time of the publishing thread's send (encode + zmq send) and of the
subscriber thread's receive (poll + recv + decode), measured in the timed loop itself (caches as cold as
they are between two messages), and the encode / decode CPU time alone in a hot loop, without sockets.

    python benchmarks/messaging.py [--objects 64] [--messages 1000] [--rate 500] [--transport ipc tcp] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

HERE = Path(__file__).resolve().parents[1]
# the old mode's child process imports `perception` from the exported baseline instead of this checkout
ROOT = Path(os.environ.get("PERCEPTION_BENCH_ROOT", HERE))
sys.path.insert(0, str(ROOT))

from perception.labels import CLASSES  # noqa: E402
from perception.messaging import (  # noqa: E402
    DetectionsMessage, Diagnostics, Publisher, Subscriber, WireObjects, decode, encode,
)

BASELINE = "c2358cf"  # detections schema 2, before the arrays became plain msgpack bin (schema 3)
PROBE = -1


def make_message(n: int, frame_ns: int) -> DetectionsMessage:
    """A detections message with valid values (boxes inside a 960x540 image, some NaN ranges, inf TTCs)."""
    rng = np.random.default_rng(0)
    x0y0 = rng.uniform(0, 700, (n, 2))
    objects = WireObjects(
        track_id=np.arange(n) + 1000, camera=rng.integers(0, 3, n), cls=rng.integers(0, len(CLASSES), n),
        score=rng.uniform(0.3, 1.0, n), box=np.hstack([x0y0, x0y0 + rng.uniform(5, 200, (n, 2))]),
        range_m=np.where(np.arange(n) % 5 == 4, np.nan, rng.uniform(2, 120, n)), range_source=rng.integers(0, 4, n),
        position=rng.normal(0, 20, (n, 3)), velocity=rng.normal(0, 5, (n, 3)),
        ttc_s=np.where(np.arange(n) % 2 == 0, np.inf, rng.uniform(0.5, 20, n)), age_s=rng.uniform(0, 30, n),
        coasting=rng.random(n) < 0.2)
    diag = Diagnostics("bench", ("front", "left", "right"), [1, 2, 3], [0, 0, 0],
                       {"preprocess": 1, "engine": 2, "track": 3})
    return DetectionsMessage(diag, frame_ns, [False] * 3, CLASSES, objects)


@dataclass
class Timings:
    latency_ns: np.ndarray   # publish -> decoded, per message
    send_cpu_ns: np.ndarray  # publishing thread's CPU time in the send call, per message
    recv_cpu_ns: np.ndarray  # subscriber thread's CPU time in the receive call (poll + recv + decode)


def receiver(mode: str, endpoint: str, n: int, conn) -> None:
    latencies, cpu = [], []
    if mode == "ours":
        with Subscriber(endpoint, ["detections"]) as sub:
            while len(latencies) < n:
                c0 = time.thread_time_ns()
                env = sub.recv()
                now = time.monotonic_ns()
                c1 = time.thread_time_ns()
                if env.message.frame_ns == PROBE:
                    conn.send("ready")
                else:
                    latencies.append(now - env.publish_ns)
                    cpu.append(c1 - c0)
    else:  # Subscriber's socket options and polling, without decoding
        from perception.messaging.subscriber import sub_socket  # not in the old baseline, which never runs bare

        ctx = zmq.Context()
        sock = sub_socket(ctx, "detections", rcvhwm=64)
        sock.subscribe(b"detections\0")
        sock.connect(endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        while len(latencies) < n:
            c0 = time.thread_time_ns()
            poller.poll()
            frame = sock.recv(zmq.NOBLOCK)
            t_ns, index = struct.unpack_from("<qq", frame, 11)
            now = time.monotonic_ns()
            c1 = time.thread_time_ns()
            if index == PROBE:
                conn.send("ready")
            else:
                latencies.append(now - t_ns)
                cpu.append(c1 - c0)
        sock.close(linger=0)
        ctx.term()
    conn.send((np.asarray(latencies, np.int64), np.asarray(cpu, np.int64)))


def measure(mode: str, endpoint: str, n_objects: int, n: int, rate_hz: float) -> Timings:
    """`n` messages of `n_objects` objects at `rate_hz` through `mode` ("bare" or "ours")."""
    size = len(encode(make_message(n_objects, 0), 0, 0))
    real, probe = make_message(n_objects, 0), make_message(n_objects, PROBE)
    pub = Publisher(endpoint, sndhwm=1000, clock=time.monotonic_ns) if mode == "ours" else None
    ctx = raw = None
    if pub is None:
        ctx = zmq.Context()
        from perception.messaging.publisher import pub_socket  # not in the old baseline, which never runs bare

        raw = pub_socket(ctx, sndhwm=1000)
        raw.bind(endpoint)
        endpoint = raw.last_endpoint.decode()
    else:
        endpoint = pub.endpoint

    def send(message: DetectionsMessage, index: int) -> None:
        if pub is not None:
            pub.publish(message)
        else:
            raw.send(b"detections\0" + struct.pack("<qq", time.monotonic_ns(), index) + bytes(size - 27), zmq.NOBLOCK)

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
    send_cpu = []
    for i in range(n + 50):  # a few extra in case the first ones crossed a probe
        next_t += period
        time.sleep(max(0.0, next_t - time.monotonic()))
        c0 = time.thread_time_ns()
        send(real, i)
        send_cpu.append(time.thread_time_ns() - c0)
        if parent.poll(0):
            break
    while True:
        if not parent.poll(10.0):
            proc.terminate()
            raise RuntimeError(f"{mode}: the subscriber did not receive {n} messages")
        result = parent.recv()
        if isinstance(result, tuple):
            break
    proc.join()
    if pub is not None:
        pub.close()
    else:
        raw.close(linger=0)
        ctx.term()
    return Timings(result[0], np.asarray(send_cpu, np.int64), result[1])


def run_mode(mode: str, endpoint: str, n_objects: int, n: int, rate_hz: float) -> np.ndarray:
    """Publish -> decode latencies (ns) of `measure` (benchmarks/node.py)."""
    return measure(mode, endpoint, n_objects, n, rate_hz).latency_ns


def cpu_times(n_objects: int, repeats: int = 2000) -> tuple[float, float, int]:
    """encode us, decode us (best of 5 hot loops) and bytes of one message."""
    m = make_message(n_objects, 0)
    frame = encode(m, 0, 0)

    def best_us(fn) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats // 5):
                fn()
            best = min(best, (time.perf_counter() - t0) / (repeats // 5))
        return best * 1e6

    return best_us(lambda: encode(m, 0, 0)), best_us(lambda: decode(frame)), len(frame)


def worker(args: argparse.Namespace) -> None:
    """The old mode: this script run against the exported baseline; one JSON line on stdout."""
    assert Path(sys.modules["perception"].__file__).is_relative_to(ROOT), "perception was not imported from ROOT"
    out = {"cpu": cpu_times(args.objects)}
    for transport in args.transport:
        t = measure("ours", _endpoint(transport, Path(args.worker), "old"), args.objects, args.messages, args.rate)
        out[transport] = [t.latency_ns.tolist(), t.send_cpu_ns.tolist(), t.recv_cpu_ns.tolist()]
    print(json.dumps(out))


def run_old(args: argparse.Namespace, transport: list[str] | None, tmp: Path, messages: int = 0) -> dict:
    """The old mode's figures: `messages` per transport (0: the hot-loop CPU times only)."""
    baseline = tmp / "baseline"
    if not baseline.exists():
        tar = subprocess.run(["git", "-C", str(HERE), "archive", BASELINE, "perception"], check=True,
                             capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(baseline, filter="data")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tmp), "--objects", str(args.objects),
               "--messages", str(messages), "--rate", str(args.rate), "--transport", *(transport or [])]
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, "PERCEPTION_BENCH_ROOT": str(baseline)})
    return json.loads(result.stdout.splitlines()[-1])


def _endpoint(transport: str, tmp: Path, mode: str) -> str:
    return f"ipc://{tmp}/{mode}.sock" if transport == "ipc" else "tcp://127.0.0.1:*"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=64)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="publications per second")
    parser.add_argument("--transport", nargs="*", default=["ipc", "tcp"], choices=["ipc", "tcp"])
    parser.add_argument("--rounds", type=int, default=5,
                        help="the messages are sent in this many rounds of bare, ours, old in turn, so that a change "
                             "of the machine's load (shared machines) falls on every mode alike")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cpu = {"ours": cpu_times(args.objects), "old": run_old(args, None, tmp)["cpu"]}
        print(f"detections message, {args.objects} objects (old = {BASELINE}, detections schema 2)")
        print(f"{'':6} {'bytes':>6} {'encode us':>10} {'decode us':>10}   (CPU, hot loop, no sockets)")
        for mode in ("ours", "old"):
            encode_us, decode_us, size = cpu[mode]
            print(f"{mode:6} {size:6d} {encode_us:10.1f} {decode_us:10.1f}")
        print()
        print(f"publish -> decode, {args.messages} messages at {args.rate:.0f} Hz in {args.rounds} rounds of the "
              f"modes in turn, subscriber in another process; send / recv: CPU us per message in the timed loop (p50)")
        print(f"{'transport':9} {'mode':6} {'p50 us':>8} {'p99 us':>8} {'p50 / bare':>11} {'p99 / bare':>11} "
              f"{'send us':>8} {'recv us':>8}")
        for transport in args.transport:
            per_round = args.messages // args.rounds
            rounds: dict[str, list[Timings]] = {"bare": [], "ours": [], "old": []}
            for _ in range(args.rounds):
                for mode in ("bare", "ours"):
                    rounds[mode].append(measure(mode, _endpoint(transport, tmp, mode), args.objects, per_round,
                                                args.rate))
                old = run_old(args, [transport], tmp, per_round)[transport]
                rounds["old"].append(Timings(*(np.asarray(v, np.int64) for v in old)))
            rows = {mode: Timings(*(np.concatenate([getattr(t, name) for t in parts])
                                    for name in ("latency_ns", "send_cpu_ns", "recv_cpu_ns")))
                    for mode, parts in rounds.items()}
            bare = rows["bare"].latency_ns
            for mode, t in rows.items():
                p50, p99 = np.percentile(t.latency_ns, [50, 99]) / 1e3
                print(f"{transport:9} {mode:6} {p50:8.0f} {p99:8.0f} {p50 / np.percentile(bare, 50) * 1e3:11.2f} "
                      f"{p99 / np.percentile(bare, 99) * 1e3:11.2f} {np.median(t.send_cpu_ns) / 1e3:8.1f} "
                      f"{np.median(t.recv_cpu_ns) / 1e3:8.1f}")


if __name__ == "__main__":
    main()
