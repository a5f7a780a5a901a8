"""End-to-end node benchmark: rate, capture -> publish latency, time outside the engine, the sequential and
the pipelined node loop side by side, and ZeroMQ publish -> decode latency against bare sockets, in one run.

    python benchmarks/node.py [--model M.onnx] [--drive D.mcap] [--threads 1] [--cameras 6] [--frame-sets 100]

Runs (the demo configuration unless overridden: 3 cameras, the bundled model, ONNX Runtime on the CPU), each
with both loops (`pipeline: false` / `true`, perception/node/pipeline.py), taking turns:
  realtime  each drive at its recorded rate; latency = anchor frame released by the source -> published
  fast      every frame as fast as the node takes them (the first --frame-sets): the node's maximum rate,
            per-stage times, and the critical path outside the engine (wall per frame set - engine time:
            what pipelining hides); the demo drive, then a demo-settings drive of each --cameras count
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

from perception.node.config import ENGINES, NodeConfig  # noqa: E402
from perception.node.process import NodeProcess  # noqa: E402
from perception.node.sinks import Sink  # noqa: E402


LOOPS = (("sequential", False), ("pipelined", True))


def run_node(config: NodeConfig, pacing: str, pipeline: bool, max_frame_sets: int | None = None,
             warmup: int = 5) -> dict:
    """One run of the node; the first `warmup` frame sets (first inference, caches) are left out."""
    config = dataclasses.replace(config, pipeline=pipeline,
                                 source=dataclasses.replace(config.source, pacing=pacing))
    stages: list[dict[str, int]] = []
    marks: list[float] = []

    def record(_summary, out) -> None:
        stages.append(out.stage_ns)
        marks.append(time.perf_counter())

    with NodeProcess(config) as process:
        summary = process.run(max_frame_sets=max_frame_sets, status=record)
    stages, marks = stages[warmup:], marks[warmup:]
    wall = marks[-1] - marks[0]
    sets = len(stages) - 1
    engine = np.array([s["engine"] for s in stages[1:]]) / 1e6
    wall_per_set = wall / sets * 1e3
    return {"sets": summary.frame_sets, "rate": sets / wall, "dropped": summary.dropped,
            "latency": np.asarray(summary.latency_ms[warmup:]), "engine": engine.mean(),
            "wall_per_set": wall_per_set, "outside_ms": wall_per_set - engine.mean(),
            "stage_means": {k: np.mean([s[k] for s in stages]) / 1e6 for k in stages[0]}}


def both_loops(config: NodeConfig, pacing: str, max_frame_sets: int | None = None,
               first: str = "sequential") -> dict[str, dict]:
    """The same run with each loop, `first` first (alternate it between runs: the load drifts)."""
    order = sorted(LOOPS, key=lambda loop: loop[0] != first)
    return {name: run_node(config, pacing, pipeline, max_frame_sets) for name, pipeline in order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--drive")
    parser.add_argument("--threads", type=int, default=NodeConfig().engine.threads,
                        help="engine.threads (default: the node's default)")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--cameras", type=int, nargs="*", default=[6],
                        help="realtime and fast runs also on a synthetic drive (demo drive settings) of each camera count")
    parser.add_argument("--frame-sets", type=int, default=100, help="frame sets per fast run")
    parser.add_argument("--preprocess", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--engine", choices=ENGINES, default="onnxruntime",
                        help="engine.kind (torch: CUDA when torch sees a GPU)")
    args = parser.parse_args()
    drives = [("drive" if args.drive else "3 cams", args.drive or _drive(None))]
    drives += [(f"{n} cams", _drive(n)) for n in args.cameras]

    with tempfile.TemporaryDirectory() as tmp:
        base = NodeConfig()

        def config_for(drive: str) -> NodeConfig:
            return dataclasses.replace(
                base, model=args.model,
                source=dataclasses.replace(base.source, drive=drive), preprocess=args.preprocess,
                engine=dataclasses.replace(base.engine, kind=args.engine, threads=args.threads),
                publish=dataclasses.replace(base.publish, endpoint=f"ipc://{tmp}/bench"))

        realtime = {label: both_loops(config_for(drive), "realtime", first=LOOPS[i % 2][0])
                    for i, (label, drive) in enumerate(drives)}
        fast = {label: both_loops(config_for(drive), "fast", args.frame_sets, first=LOOPS[(i + 1) % 2][0])
                for i, (label, drive) in enumerate(drives)}

    from benchmarks.messaging import run_mode

    zmq_bare = run_mode("bare", "ipc:///tmp/perception-bench-bare", 32, args.messages, 200.0) / 1e3  # us
    zmq_ours = run_mode("ours", "ipc:///tmp/perception-bench-ours", 32, args.messages, 200.0) / 1e3

    rows = [("", "sequential", "pipelined", "pipelined / sequential")]
    for label, runs in realtime.items():
        for run in runs.values():
            run["p50"], run["p99"] = np.percentile(run["latency"], [50, 99])
            run["p99/p50"] = run["p99"] / run["p50"]
        rows += [
            _row(f"realtime {label}: frame sets (dropped frames)", runs, lambda r: f"{r['sets']} ({r['dropped']})"),
            _row(f"realtime {label}: rate", runs, "{:.1f} Hz", "rate"),
            _row(f"realtime {label}: capture -> publish p50", runs, "{:.1f} ms", "p50"),
            _row(f"realtime {label}: capture -> publish p99", runs, "{:.1f} ms", "p99"),
            _row(f"realtime {label}: p99 / p50", runs, "{:.2f}", "p99/p50"),
        ]
    for label, runs in fast.items():
        for run in runs.values():
            run.update({f"stage {k}": v for k, v in run["stage_means"].items()})
            run["outside_share"] = run["outside_ms"] / run["wall_per_set"]
        rows += [
            _row(f"fast {label}: max rate", runs, "{:.1f} Hz", "rate"),
            _row(f"fast {label}: wall per frame set", runs, "{:.1f} ms", "wall_per_set"),
            *(_row(f"fast {label}: stage {k}", runs, "{:.2f} ms", f"stage {k}")
              for k in runs["sequential"]["stage_means"]),
            _row(f"fast {label}: critical path outside the engine", runs, "{:.1f} ms", "outside_ms"),
            _row(f"fast {label}: share of the wall outside the engine", runs, "{:.0%}", "outside_share"),
        ]
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    for name, seq, pipe, note in rows:
        print(f"{name:<{width[0]}}  {seq:>{width[1]}}  {pipe:>{width[2]}}  {note}")
    print(f"\nzmq publish->decode, bare sockets p50 / p99: {np.percentile(zmq_bare, 50):.0f} / "
          f"{np.percentile(zmq_bare, 99):.0f} us (floor)")
    print(f"zmq publish->decode, ours p50 / p99: {np.percentile(zmq_ours, 50):.0f} / "
          f"{np.percentile(zmq_ours, 99):.0f} us (x{np.percentile(zmq_ours, 50) / np.percentile(zmq_bare, 50):.1f} "
          f"of the floor at p50)")
    print("targets (issue 4): >= 20 Hz with 3 cameras, realtime p99 <= 1.3 x p50, <= 10 % outside the engine")


def _row(label: str, runs: dict[str, dict], fmt, key: str | None = None) -> tuple[str, str, str, str]:
    """One table row: the sequential and pipelined values of `key` (formatted by `fmt`, a format string or a
    function of the run) and their ratio."""
    seq, pipe = runs["sequential"], runs["pipelined"]
    if key is None:
        return label, fmt(seq), fmt(pipe), ""
    ratio = f"x{pipe[key] / seq[key]:.2f}" if seq[key] else ""
    return label, fmt.format(seq[key]), fmt.format(pipe[key]), ratio


def _drive(cameras: int | None) -> str:
    from perception.commands.run import DEMO_DRIVE, demo_drive

    if cameras is None:
        return demo_drive()
    from replay.synth import cached_drive

    return str(cached_drive(**{**DEMO_DRIVE, "num_cameras": cameras}))


if __name__ == "__main__":
    main()
