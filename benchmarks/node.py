"""End-to-end node benchmark: rate, capture -> publish latency, time outside the engine, and ZeroMQ
publish -> decode latency against bare sockets, in one run, as one table.

    python benchmarks/node.py [--model M.onnx] [--drive D.mcap] [--threads 2] [--messages 500]

Runs (the demo configuration unless overridden: 3 cameras, the bundled model, ONNX Runtime on the CPU):
  realtime  the drive at its recorded rate; latency = anchor frame released by the source -> published
  fast      every frame as fast as the node takes them: the node's maximum rate and per-stage times
  zmq       a detections message through Publisher -> Subscriber (ours) vs the same bytes through bare
            PUB/SUB sockets (the floor), subscriber in another process (benchmarks/messaging.py)
Targets (issue 4): >= 20 Hz with 3 cameras, p99 <= 1.3 x p50, non-engine overhead <= 10 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perception.node.config import NodeConfig  # noqa: E402
from perception.node.process import NodeProcess  # noqa: E402
from perception.node.sinks import Sink  # noqa: E402


class _Timings(Sink):
    """Each frame set's stage times and the wall time its outputs were written."""

    name = "timings"

    def __init__(self) -> None:
        self.stages: list[dict[str, int]] = []
        self.marks: list[float] = []

    def write(self, outputs) -> None:
        self.stages.append(outputs.stage_ns)
        self.marks.append(time.perf_counter())


def run_node(config: NodeConfig, pacing: str, warmup: int = 5) -> dict:
    """One run of the node; the first `warmup` frame sets (first inference, caches) are left out."""
    config = dataclasses.replace(config, source=dataclasses.replace(config.source, pacing=pacing))
    stages: list[dict[str, int]] = []
    marks: list[float] = []

    def record(_summary, out) -> None:
        stages.append(out.stage_ns)
        marks.append(time.perf_counter())

    with NodeProcess(config) as process:
        summary = process.run(status=record)
    stages, marks = stages[warmup:], marks[warmup:]
    wall = marks[-1] - marks[0]
    sets = len(stages) - 1
    engine = np.array([s["engine"] for s in stages[1:]]) / 1e6
    return {"sets": summary.frame_sets, "rate": sets / wall, "dropped": summary.dropped,
            "latency": np.asarray(summary.latency_ms[warmup:]), "engine": engine,
            "wall_per_set": wall / sets * 1e3,
            "stage_means": {k: np.mean([s[k] for s in stages]) / 1e6 for k in stages[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--drive")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--cameras", type=int, help="a synthetic drive of this many cameras (demo drive settings) "
                                                    "instead of the demo drive")
    parser.add_argument("--preprocess", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    drive = args.drive or _drive(args.cameras)

    with tempfile.TemporaryDirectory() as tmp:
        base = NodeConfig()
        config = dataclasses.replace(
            base, model=args.model,
            source=dataclasses.replace(base.source, drive=drive), preprocess=args.preprocess,
            engine=dataclasses.replace(base.engine, threads=args.threads),
            publish=dataclasses.replace(base.publish, endpoint=f"ipc://{tmp}/bench"))
        realtime = run_node(config, "realtime")
        fast = run_node(config, "fast")

    from benchmarks.messaging import run_mode

    zmq_bare = run_mode("bare", "ipc:///tmp/perception-bench-bare", 32, args.messages, 200.0) / 1e3  # us
    zmq_ours = run_mode("ours", "ipc:///tmp/perception-bench-ours", 32, args.messages, 200.0) / 1e3

    lat = realtime["latency"]
    p50, p99 = np.percentile(lat, [50, 99])
    outside = 1.0 - fast["engine"].mean() / fast["wall_per_set"]
    rows = [
        ("realtime: frame sets (dropped frames)", f"{realtime['sets']} ({realtime['dropped']})", ""),
        ("realtime: rate", f"{realtime['rate']:.1f} Hz", "recorded rate"),
        ("realtime: capture -> publish p50 / p99", f"{p50:.1f} / {p99:.1f} ms", f"p99/p50 = {p99 / p50:.2f} (target <= 1.3)"),
        ("fast: max rate", f"{fast['rate']:.1f} Hz", "target >= 20 Hz"),
        ("fast: wall per frame set", f"{fast['wall_per_set']:.1f} ms", ""),
        *((f"fast: stage {k}", f"{v:.2f} ms", "") for k, v in fast["stage_means"].items()),
        ("fast: share of time outside the engine", f"{outside:.0%}", "target <= 10 %"),
        ("zmq publish->decode, bare sockets p50 / p99", f"{np.percentile(zmq_bare, 50):.0f} / {np.percentile(zmq_bare, 99):.0f} us", "floor"),
        ("zmq publish->decode, ours p50 / p99", f"{np.percentile(zmq_ours, 50):.0f} / {np.percentile(zmq_ours, 99):.0f} us",
         f"x{np.percentile(zmq_ours, 50) / np.percentile(zmq_bare, 50):.1f} of the floor at p50"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")


def _drive(cameras: int | None) -> str:
    from perception.commands.run import DEMO_DRIVE, demo_drive

    if cameras is None:
        return demo_drive()
    from replay.synth import cached_drive

    return str(cached_drive(**{**DEMO_DRIVE, "num_cameras": cameras}))


if __name__ == "__main__":
    main()
