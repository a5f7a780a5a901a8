"""How a batch of frames is laid out for the kernels of preprocess.cu (shared by the CPU shim and the GPU).

Frames are copied into one staging buffer (one upload on the GPU), each camera at a 256-byte aligned
offset. A frame keeps its row pitch when it is a multiple of 4 bytes (the kernels' 32-bit loads need
that); otherwise its rows are repacked at the smallest 4-byte multiple. Each camera is described to the
kernels by one `PreprocessCamera` record (CAMERA_DTYPE mirrors the C struct). Cameras are grouped by
pixel format: a rig with one format is one launch; a mixed rig is one launch per format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from perception.errors import PerceptionError
from perception.frame import Frame, PixelFormat, buffer_rows, min_stride
from perception.preprocess.common import (
    Normalization,
    RemapMaps,
    normalization_affine,
    pad_output,
    yuv_to_rgb_coefficients,
)


class KernelError(PerceptionError):
    """The CUDA preprocessing kernels cannot be built, loaded or launched as asked."""


_FIELDS = [
    ("src", np.uint64), ("table", np.uint64),
    ("width", np.int32), ("height", np.int32), ("stride", np.int32), ("batch_index", np.int32),
    ("y_offset", np.float32), ("y_scale", np.float32), ("c_scale", np.float32), ("r_v", np.float32),
    ("g_u", np.float32), ("g_v", np.float32), ("b_u", np.float32), ("unused", np.float32),
]
CAMERA_DTYPE = np.dtype(
    {
        "names": [name for name, _ in _FIELDS],
        "formats": [fmt for _, fmt in _FIELDS],
        "offsets": [0, 8] + [16 + 4 * i for i in range(len(_FIELDS) - 2)],
        "itemsize": 64,
    }
)

KERNEL_FORMATS = (PixelFormat.NV12, PixelFormat.YUYV, PixelFormat.BGR8, PixelFormat.RGB8)
KERNEL_NAMES = tuple(f"preprocess_{fmt.value}_{suffix}" for fmt in KERNEL_FORMATS for suffix in ("f16", "f32"))
BLOCK = (32, 8, 1)  # one warp per row segment: coalesced table reads and output writes
SLOT_ALIGN = 256
MAX_SOURCE_BYTES = 2**31 - 1  # the kernels index a frame with 32-bit ints


def normalization_args(norm: Normalization) -> list:
    """The kernels' trailing arguments: scale_r/g/b, bias_r/g/b (float32), bgr (int32), pad_r/g/b (float32)."""
    scale, bias = normalization_affine(norm)
    return ([np.float32(v) for v in (*scale, *bias)] + [np.int32(norm.color_order == "BGR")]
            + [np.float32(v) for v in pad_output(norm)])


def kernel_name(pixel_format: PixelFormat, dtype: np.dtype) -> str:
    suffix = "f16" if np.dtype(dtype) == np.float16 else "f32"
    return f"preprocess_{PixelFormat(pixel_format).value}_{suffix}"


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class Slot:
    """Where one camera's frame sits in the staging buffer."""

    offset: int
    pitch: int
    rows: int
    row_bytes: int  # bytes of a row that hold pixels (the rest is padding)


@dataclass(frozen=True)
class Launch:
    """One kernel launch: `count` consecutive camera records starting at record `first`."""

    kernel: str
    first: int
    count: int


@dataclass(frozen=True)
class BatchPlan:
    """The staging layout and launches for frames of given formats and sizes (reused while they match)."""

    key: tuple
    slots: tuple[Slot, ...]  # in camera order
    order: tuple[int, ...]  # camera index of each record (records grouped by format)
    launches: tuple[Launch, ...]
    staging_bytes: int


def plan_key(frames: Sequence[Frame]) -> tuple:
    return tuple((f.pixel_format, f.width, f.height, f.stride) for f in frames)


def plan_batch(frames: Sequence[Frame], dtype: np.dtype) -> BatchPlan:
    slots = []
    offset = 0
    for n, frame in enumerate(frames):
        if frame.pixel_format not in KERNEL_FORMATS:
            raise KernelError(f"camera {n}: no CUDA kernel for pixel format {frame.pixel_format.value}")
        row_bytes = min_stride(frame.pixel_format, frame.width)
        pitch = frame.stride if frame.stride % 4 == 0 else _align(row_bytes, 4)
        rows = buffer_rows(frame.pixel_format, frame.height)
        if pitch * rows > MAX_SOURCE_BYTES:
            raise KernelError(f"camera {n}: frame of {pitch * rows} bytes is over the kernels' 2 GiB limit")
        slots.append(Slot(offset, pitch, rows, row_bytes))
        offset += _align(pitch * rows, SLOT_ALIGN)
    order = sorted(range(len(frames)), key=lambda n: KERNEL_FORMATS.index(frames[n].pixel_format))
    launches = []
    for first, n in enumerate(order):
        name = kernel_name(frames[n].pixel_format, dtype)
        if launches and launches[-1].kernel == name:
            launches[-1] = Launch(name, launches[-1].first, launches[-1].count + 1)
        else:
            launches.append(Launch(name, first, 1))
    return BatchPlan(plan_key(frames), tuple(slots), tuple(order), tuple(launches), max(offset, SLOT_ALIGN))


def staged_addresses(plan: BatchPlan, staging_address: int) -> list[int]:
    """Where each camera's frame starts once staged at `staging_address`."""
    return [staging_address + slot.offset for slot in plan.slots]


def stage_frames(frames: Sequence[Frame], plan: BatchPlan, staging: np.ndarray) -> None:
    """Copy every frame's rows into its slot of `staging` (uint8, at least plan.staging_bytes)."""
    for frame, slot in zip(frames, plan.slots):
        rows = frame.rows()
        dst = staging[slot.offset : slot.offset + slot.pitch * slot.rows]
        if slot.pitch == frame.stride:
            dst[:] = rows.reshape(-1)
        else:
            dst.reshape(slot.rows, slot.pitch)[:, : slot.row_bytes] = rows[:, : slot.row_bytes]


def camera_records(
    frames: Sequence[Frame], plan: BatchPlan, source_addresses: Sequence[int], table_addresses: Sequence[int]
) -> np.ndarray:
    """The PreprocessCamera records, in plan.order, of frames whose rows (at the plan's pitch) start at
    `source_addresses` and whose interleaved tables start at `table_addresses` (device or host memory)."""
    records = np.zeros(len(frames), CAMERA_DTYPE)
    for i, n in enumerate(plan.order):
        frame, slot = frames[n], plan.slots[n]
        values = dict(src=source_addresses[n], table=table_addresses[n], width=frame.width,
                      height=frame.height, stride=slot.pitch, batch_index=n)
        if frame.pixel_format in (PixelFormat.NV12, PixelFormat.YUYV):
            values.update(yuv_to_rgb_coefficients(frame.color)._asdict())
        for name, value in values.items():
            records[name][i] = value
    return records


def interleaved_table(table: RemapMaps) -> np.ndarray:
    """float32 [H, W, 2] of (x, y) pairs: the kernels read one 8-byte pair per output pixel."""
    return np.ascontiguousarray(np.stack([table.map_x, table.map_y], axis=-1), dtype=np.float32)


def default_grid(out_w: int, out_h: int, cameras: int) -> tuple[int, int, int]:
    """A grid covering one camera's output with BLOCK-sized blocks, one z-slice per camera."""
    return (-(-out_w // BLOCK[0]), -(-out_h // BLOCK[1]), cameras)
