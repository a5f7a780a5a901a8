"""perception run: the node. With no arguments: the bundled demo model on the bundled synthetic drive."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="node YAML (default: the embedded demo configuration)")
    parser.add_argument("--drive", help="recorded drive to run on (overrides source.drive)")
    parser.add_argument("--pacing", choices=("realtime", "fast", "lockstep"), help="overrides source.pacing")
    parser.add_argument("--endpoint", help="PUB endpoint (overrides publish.endpoint)")
    parser.add_argument("--record", help="record the outputs into this MCAP run file")
    parser.add_argument("--max-frame-sets", type=int, help="stop after this many frame sets")
    parser.add_argument("--quiet", action="store_true", help="no live status line")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from perception.node.config import load_config
    from perception.node.process import NodeProcess

    config = load_config(args.config)
    source = config.source
    if args.drive:
        source = dataclasses.replace(source, kind="drive", drive=args.drive)
    if args.pacing:
        source = dataclasses.replace(source, pacing=args.pacing)
    config = dataclasses.replace(config, source=source)
    if args.endpoint:
        config = dataclasses.replace(config, publish=dataclasses.replace(config.publish, endpoint=args.endpoint))
    if args.record:
        config = dataclasses.replace(config, record=args.record)

    with NodeProcess(config) as process:
        process.install_signal_handlers()
        print(f"perception: model {process.engine.contract.model_id} on {process.engine.name}, cameras "
              f"{', '.join(process.node.cameras)}, publishing on {process.publisher.endpoint}", file=sys.stderr)
        status = None if args.quiet else _StatusLine()
        summary = process.run(max_frame_sets=args.max_frame_sets, status=status)
    if status is not None:
        status.finish()
    latency = np.asarray(summary.latency_ms or [np.nan])
    print(f"perception: {summary.frame_sets} frame sets, {summary.objects} object reports, "
          f"latency p50 {np.percentile(latency, 50):.1f} ms p99 {np.percentile(latency, 99):.1f} ms, "
          f"{summary.dropped} frames dropped, {summary.bad_frames} bad frames", file=sys.stderr)
    return 0


class _StatusLine:
    """One line on stderr, refreshed twice a second: rate, latency, objects, brake hint, camera states."""

    def __init__(self) -> None:
        self._next = 0.0
        self._started = time.monotonic()
        self._camera_states = ""

    def __call__(self, summary, outputs) -> None:
        if outputs.health is not None:
            self._camera_states = " ".join(f"{c}:{s}" for c, s in zip(outputs.health.diag.cameras,
                                                                   outputs.health.camera_states))
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.5
        rate = summary.frame_sets / max(now - self._started, 1e-9)
        recent = np.asarray(summary.latency_ms[-100:] or [np.nan])
        sys.stderr.write(f"\r{rate:5.1f} Hz  latency p50 {np.percentile(recent, 50):5.1f} ms "
                         f"p99 {np.percentile(recent, 99):5.1f} ms  objects {len(outputs.detections.objects):2d}  "
                         f"brake {outputs.hints.brake:<7s} {self._camera_states}   ")
        sys.stderr.flush()

    def finish(self) -> None:
        sys.stderr.write("\n")
