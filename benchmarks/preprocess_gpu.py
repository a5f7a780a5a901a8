"""GPU preprocessing speed: 6 x 1920x1080 NV12 -> [6, 3, 384, 640] float16, on one GPU, side by side:

- fused:  kernels/preprocess.cu through CudaPreprocessor (CuPy backend): one launch for all cameras,
          sampling the composite remap table straight from the raw NV12 frames
- torch:  the op chain one writes in PyTorch: NV12 -> float planes, chroma upsampled (interpolate),
          YUV -> RGB at full resolution, grid_sample through the same remap tables, normalise, pad mask,
          cast to float16
- floor:  bytes the fused kernel must move (raw frames + remap tables read, batch written) over the
          device-to-device copy bandwidth measured here

All on frames already in GPU memory, timed with CUDA events, median of --runs. The host staging + upload
that both pay is timed on its own. Needs CuPy and torch with CUDA (no pycuda).

Usage (repository root): python benchmarks/preprocess_gpu.py [--runs 200] [--cameras 6]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import cupy as cp
import numpy as np
import torch
import torch.nn.functional as F

from calib.defaults import default_rig
from calib.remap import RemapTable, build_remap
from kernels.launcher import CudaPreprocessor
from perception.frame import ColorSpec, Frame, PixelFormat, buffer_rows
from perception.preprocess.common import Normalization, yuv_to_rgb_coefficients
from perception.preprocess.reference import preprocess_reference

NET_W, NET_H = 640, 384
WIDTH, HEIGHT = 1920, 1080


def cupy_median_us(fn: Callable[[], object], stream: cp.cuda.Stream, runs: int) -> float:
    for _ in range(10):
        fn()
    stream.synchronize()
    samples = []
    for _ in range(runs):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        samples.append(1e3 * cp.cuda.get_elapsed_time(start, end))
    return statistics.median(samples)


def torch_median_us(fn: Callable[[], object], runs: int) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(1e3 * start.elapsed_time(end))
    return statistics.median(samples)


def copy_bandwidth(runs: int, nbytes: int = 1 << 30) -> float:
    """Bytes per second (read + written) of a device-to-device copy far larger than L2."""
    src = cp.ones(nbytes, cp.uint8)
    dst = cp.empty_like(src)
    stream = cp.cuda.Stream(non_blocking=True)

    def copy() -> None:
        dst.data.copy_from_device_async(src.data, nbytes, stream)  # cudaMemcpyAsync, device to device

    return 2 * nbytes / (cupy_median_us(copy, stream, runs) / 1e6)


def smooth_nv12(n: int) -> Frame:
    """A deterministic smooth NV12 image (gradients and waves, full chroma range), so that the two
    implementations, which interpolate chroma differently, can be compared meaningfully."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    luma = 128 + 90 * np.sin(xx / (53 + 7 * n) + yy / 97) * np.cos(yy / (41 + 3 * n))
    cy, cx = np.mgrid[0 : HEIGHT // 2, 0 : WIDTH // 2].astype(np.float32)
    u = 128 + 100 * np.sin(cx / 61 + n)
    v = 128 + 100 * np.cos(cy / 37 - cx / 113)
    uv = np.stack([u, v], axis=-1).reshape(HEIGHT // 2, WIDTH)
    data = np.concatenate([luma, uv]).clip(0, 255).astype(np.uint8)
    assert data.shape == (buffer_rows(PixelFormat.NV12, HEIGHT), WIDTH)
    return Frame(data.reshape(-1), WIDTH, HEIGHT, WIDTH, PixelFormat.NV12)


class TorchChain:
    """NV12 -> normalised planar RGB with stock PyTorch ops (the naive GPU way)."""

    def __init__(self, tables: list[RemapTable], norm: Normalization, device: torch.device) -> None:
        grids, valid = [], []
        for t in tables:
            ok = (t.map_x >= 0) & (t.map_x <= WIDTH - 1) & (t.map_y >= 0) & (t.map_y <= HEIGHT - 1)
            gx = np.where(ok, t.map_x / (WIDTH - 1) * 2 - 1, 0)  # align_corners=True: -1, +1 = edge centres
            gy = np.where(ok, t.map_y / (HEIGHT - 1) * 2 - 1, 0)
            grids.append(np.stack([gx, gy], axis=-1))
            valid.append(ok)
        self.grid = torch.tensor(np.stack(grids), dtype=torch.float32, device=device)
        self.pad = torch.tensor(~np.stack(valid)[:, None], device=device)
        self.k = yuv_to_rgb_coefficients(ColorSpec())
        self.mean = torch.tensor(norm.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(norm.std, device=device).view(1, 3, 1, 1)

    def run(self, nv12: torch.Tensor) -> torch.Tensor:
        n, k = nv12.shape[0], self.k
        luma = (nv12[:, :HEIGHT].float() - float(k.y_offset)) * float(k.y_scale)
        uv = nv12[:, HEIGHT:].reshape(n, HEIGHT // 2, WIDTH // 2, 2).permute(0, 3, 1, 2).float()
        uv = F.interpolate(uv, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)
        pb = (uv[:, 0] - 128) * float(k.c_scale)
        pr = (uv[:, 1] - 128) * float(k.c_scale)
        rgb = torch.stack([luma + float(k.r_v) * pr, luma + float(k.g_u) * pb + float(k.g_v) * pr,
                           luma + float(k.b_u) * pb], dim=1).clamp_(0, 255)
        sampled = F.grid_sample(rgb, self.grid, mode="bilinear", padding_mode="border", align_corners=True)
        return ((sampled / 255 - self.mean) / self.std).masked_fill_(self.pad, 0).half()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per method (median reported)")
    parser.add_argument("--cameras", type=int, default=6)
    args = parser.parse_args()

    rig = list(default_rig(4).cameras)  # the default rig's 1920x1080 cameras, then the two wide ones again
    cameras = [rig[(0, 1, 2, 3, 1, 2)[i % 6]] for i in range(args.cameras)]
    tables = [build_remap(c, NET_W, NET_H, "letterbox") for c in cameras]
    frames = [smooth_nv12(n) for n in range(args.cameras)]
    norm = Normalization()

    fused = CudaPreprocessor(tables, norm, np.float16, backend="cupy")
    stream = fused.gpu.stream
    upload_us = cupy_median_us(lambda: fused.upload(frames), stream, max(20, args.runs // 10))
    kernel_us = cupy_median_us(fused.launch, stream, args.runs)
    result = fused.run(frames).copy()

    device = torch.device("cuda")
    chain = TorchChain(tables, norm, device)
    nv12 = torch.tensor(np.stack([f.rows() for f in frames]), device=device)
    torch_us = torch_median_us(lambda: chain.run(nv12), args.runs)
    torch_result = chain.run(nv12).cpu().numpy()

    frame_bytes = sum(f.stride * buffer_rows(f.pixel_format, f.height) for f in frames)
    table_bytes = sum(2 * t.map_x.nbytes for t in tables)
    moved = frame_bytes + table_bytes + result.nbytes
    bandwidth = copy_bandwidth(max(20, args.runs // 10))
    floor_us = 1e6 * moved / bandwidth

    ref = preprocess_reference(frames[:1], tables[:1], norm, np.float16)
    ref_err = np.abs(result[:1].astype(np.float32) - ref.astype(np.float32)).max()
    diff = np.abs(result.astype(np.float32) - torch_result.astype(np.float32))

    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    print(f"{args.cameras} x NV12 {WIDTH}x{HEIGHT} -> [{args.cameras}, 3, {NET_H}, {NET_W}] float16 on {name}")
    print(f"torch {torch.__version__}, CuPy {cp.__version__}; CUDA events, median of {args.runs} runs")
    print(f"floor: {frame_bytes / 1e6:.1f} MB frames + {table_bytes / 1e6:.1f} MB tables read, "
          f"{result.nbytes / 1e6:.1f} MB written, at {bandwidth / 1e12:.2f} TB/s (device-to-device copy)")
    print(f"check: fused vs numpy reference (camera 0) max |diff| {ref_err:.2g}; fused vs torch chain "
          f"max |diff| {diff.max():.3g}, mean {diff.mean():.3g} (the chain interpolates chroma differently "
          f"and does not quantise to 1/32 px)")
    print()
    print("| method | median us | torch chain / this | this / floor |")
    print("| --- | ---: | ---: | ---: |")
    for label, us in (("fused kernel (1 launch)", kernel_us), ("torch op chain", torch_us),
                      ("DRAM floor", floor_us)):
        print(f"| {label} | {us:.1f} | {torch_us / us:.1f}x | {us / floor_us:.2f}x |")
    print(f"| (stage in pinned memory + upload, {frame_bytes / 1e6:.1f} MB) | {upload_us:.1f} | | |")


if __name__ == "__main__":
    main()
