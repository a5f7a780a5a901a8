"""Preprocessing speed: N x 1920x1080 NV12 frames of the default rig -> [N, 3, 384, 640] float32.

Side by side in one run:
- fast:   perception.preprocess.FastPreprocessor (one composite remap per plane, folded colour + normalise)
- naive:  per camera cvtColor NV12->RGB, cv2.undistort (camera K / dist), letterbox resize, normalise,
          transpose: the chain one writes without a composite table
- floor:  bytes every implementation must read (the frames) and write (the batch), over the memcpy
          bandwidth measured here with numpy on a buffer far larger than the caches

Usage (repository root, package installed or PYTHONPATH=.):
    python benchmarks/preprocess.py [--runs 20] [--cameras 4] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

import cv2
import numpy as np

from calib.camera import CameraModel
from calib.defaults import default_rig
from calib.remap import build_remap
from perception.frame import Frame, PixelFormat, buffer_rows
from perception.preprocess import FastPreprocessor, Normalization

NET_W, NET_H = 640, 384


def median_ms(methods: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time of each method; methods take turns within every round so load changes hit all."""
    for fn in methods.values():
        fn()  # warm-up: buffers, plans, OpenCV's thread pool
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(runs):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(s) for name, s in samples.items()}


def memcpy_bandwidth(runs: int, nbytes: int = 256 << 20) -> float:
    """Bytes per second moved (read + written) by a numpy copy of a buffer far larger than the caches."""
    src = np.ones(nbytes, np.uint8)
    dst = np.empty_like(src)
    return 2 * nbytes / (median_ms({"copy": lambda: np.copyto(dst, src)}, runs)["copy"] / 1e3)


class NaiveChain:
    """The textbook per-camera OpenCV pipeline, for comparison only."""

    def __init__(self, cameras: list[CameraModel], norm: Normalization) -> None:
        self.cameras = cameras
        self.mean = np.asarray(norm.mean, np.float32)
        self.std = np.asarray(norm.std, np.float32)

    def run(self, frames: list[Frame]) -> np.ndarray:
        out = np.empty((len(frames), 3, NET_H, NET_W), np.float32)
        for n, (frame, camera) in enumerate(zip(frames, self.cameras)):
            rgb = cv2.cvtColor(frame.rows()[:, : frame.width], cv2.COLOR_YUV2RGB_NV12)
            undistorted = cv2.undistort(rgb, camera.K, camera.dist)
            s = min(NET_W / frame.width, NET_H / frame.height)
            w, h = round(frame.width * s), round(frame.height * s)
            small = cv2.resize(undistorted, (w, h), interpolation=cv2.INTER_LINEAR)
            normalised = (small.astype(np.float32) / 255 - self.mean) / self.std
            canvas = np.zeros((NET_H, NET_W, 3), np.float32)  # pad = mean colour = 0 after normalising
            top, left = (NET_H - h) // 2, (NET_W - w) // 2
            canvas[top : top + h, left : left + w] = normalised
            out[n] = canvas.transpose(2, 0, 1)
        return out


def nv12_frame(rng: np.random.Generator, width: int, height: int) -> Frame:
    data = rng.integers(0, 256, width * buffer_rows(PixelFormat.NV12, height), dtype=np.uint8)
    return Frame(data, width, height, width, PixelFormat.NV12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per method (median reported)")
    parser.add_argument("--cameras", type=int, default=4, help="cameras of the default rig (1..4 are 1080p)")
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)

    cameras = list(default_rig(args.cameras).cameras)
    tables = [build_remap(camera, NET_W, NET_H, "letterbox") for camera in cameras]
    rng = np.random.default_rng(0)
    frames = [nv12_frame(rng, c.width, c.height) for c in cameras]
    norm = Normalization()

    fast = FastPreprocessor(tables, norm)
    fast16 = FastPreprocessor(tables, norm, np.float16)
    naive = NaiveChain(cameras, norm)
    times = median_ms({
        "fast (float32 out)": lambda: fast.run(frames),
        "fast (float16 out)": lambda: fast16.run(frames),
        "naive OpenCV chain": lambda: naive.run(frames),
    }, args.runs)
    bytes_moved = sum(f.stride * buffer_rows(f.pixel_format, f.height) for f in frames) + fast.output.nbytes
    bandwidth = memcpy_bandwidth(max(3, args.runs // 4))
    times["memory-bandwidth floor"] = 1e3 * bytes_moved / bandwidth

    sizes = ", ".join(f"{c.name} {c.width}x{c.height} {c.distortion}" for c in cameras)
    print(f"{len(frames)} x NV12 -> [{len(frames)}, 3, {NET_H}, {NET_W}] ({sizes})")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, OpenCV {cv2.__version__} "
          f"({cv2.getNumThreads()} threads), numpy {np.__version__}; median of {args.runs} runs")
    print(f"floor: {bytes_moved / 1e6:.1f} MB read + written at {bandwidth / 1e9:.1f} GB/s (numpy memcpy)")
    print()
    print("| method | median ms | naive / this | this / floor |")
    print("| --- | ---: | ---: | ---: |")
    naive_ms, floor_ms = times["naive OpenCV chain"], times["memory-bandwidth floor"]
    for name, ms in times.items():
        print(f"| {name} | {ms:.2f} | {naive_ms / ms:.2f}x | {ms / floor_ms:.1f}x |")


if __name__ == "__main__":
    main()
