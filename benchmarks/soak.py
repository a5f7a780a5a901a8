"""Soak: the node on a looping drive at realtime pacing for N minutes, sampled once a minute.

    python benchmarks/soak.py --minutes 30 [--sample-s 60] [--cameras 3]

Per sample: RSS (MB), open file descriptors, OS threads, frame sets, end-to-end latency p50 / p99 (ms) of
the frame sets in that interval. The last lines compare the first and the last interval (goal: RSS growth
<= 20 MB, p99 stable within 10 %; issue 12).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perception.node.config import config_from_dict  # noqa: E402
from perception.node.process import NodeProcess  # noqa: E402
from replay.synth import cached_drive  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--cameras", type=int, default=3)
    args = parser.parse_args()

    drive = cached_drive(scenario="mixed", num_cameras=args.cameras, seconds=20.0, fps=10.0, seed=11)
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict({
            "source": {"kind": "drive", "drive": str(drive), "pacing": "realtime", "loop": True},
            "publish": {"endpoint": f"ipc://{tmp}/soak"}}, "soak")
        latencies: list[float] = []
        lock = threading.Lock()

        def status(summary, outputs) -> None:
            with lock:
                latencies.append(summary.latency_ms[-1])
            summary.latency_ms.clear()  # the soak keeps its own per-interval samples
            summary.engine_ms.clear()

        with NodeProcess(config) as process:
            runner = threading.Thread(target=process.run, kwargs={"status": status}, daemon=True)
            runner.start()
            rows = []
            print(f"{'min':>6} {'RSS MB':>8} {'fds':>5} {'threads':>7} {'sets':>6} {'p50 ms':>8} {'p99 ms':>8}",
                  flush=True)
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end and runner.is_alive():
                time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
                with lock:
                    window, latencies[:] = np.array(latencies), []
                p50, p99 = np.percentile(window, [50, 99]) if window.size else (float("nan"),) * 2
                row = (len(rows) + 1) * args.sample_s / 60, rss_mb(), len(os.listdir("/proc/self/fd")), \
                    len(os.listdir("/proc/self/task")), window.size, p50, p99
                rows.append(row)
                print(f"{row[0]:6.1f} {row[1]:8.1f} {row[2]:5d} {row[3]:7d} {row[4]:6d} {row[5]:8.1f} {row[6]:8.1f}",
                      flush=True)
            process.stop()
            runner.join(10)
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"RSS growth {last[1] - first[1]:+.1f} MB, fds {last[2] - first[2]:+d}, threads {last[3] - first[3]:+d}, "
              f"p99 {last[6] / first[6]:.2f}x of the first interval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
