"""Drives per minute replayed on a local Ray cluster of 1 and 2 worker CPUs (docs/fleet.md).

    python benchmarks/fleet_ray.py [--drives 4] [--seconds 3]

Synthetic drives (cached), lockstep replay through the node, one Ray task per drive; each cluster size
is a fresh `ray.init(num_cpus=N)`. Prints drives/min, frame sets/s and the speed-up over 1 worker. On a
machine shared with other jobs the figures are lower than on a quiet one (report the load with them).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray

from replay.runner_pool import replay_drives
from replay.synth import cached_drive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drives", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    drives = [cached_drive(seed=100 + i, seconds=args.seconds, fps=10.0, num_cameras=1, scenario="mixed",
                           width=320, height=180) for i in range(args.drives)]
    rows = []
    for workers in args.workers:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                summary = replay_drives(drives, out, use_ray=True, progress=False)
                seconds = time.perf_counter() - started
        finally:
            ray.shutdown()
        frames = sum(r.frame_sets for r in summary.results)
        rows.append((workers, sum(r.ok for r in summary.results), seconds, frames))
    load = os.getloadavg()[0]
    print(f"{args.drives} drives of {args.seconds:.0f} s (1 camera 320x180, 10 fps), load average {load:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'workers':>7}  {'ok':>3}  {'s':>6}  {'drives/min':>10}  {'frame sets/s':>12}  {'speed-up':>8}")
    for workers, ok, seconds, frames in rows:
        print(f"{workers:7d}  {ok:3d}  {seconds:6.1f}  {60 * ok / seconds:10.1f}  {frames / seconds:12.1f}  "
              f"{rows[0][2] / seconds:7.2f}x")


if __name__ == "__main__":
    main()
