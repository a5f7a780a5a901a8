"""Calibration data for INT8: drive frames through the node's own preprocessing and the float32 model.

The temporal model has state inputs, so a calibration sample is a full set of graph inputs for one
frame set: the images (letterbox remap table + FastPreprocessor, the node's path), and the state, ages,
dt and fresh flags the float32 model produces when it streams through the drive from its start. Ranges
calibrated this way cover the state the quantized model will really see.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from calib.camera import CameraModel
from calib.remap import RemapTable
from perception.contract import ModelContract
from perception.engine.onnxruntime import OnnxRuntimeEngine
from perception.errors import DriveError
from perception.frame import Frame
from perception.model_card import ModelCard
from perception.node.node import remap_tables
from perception.preprocess import FastPreprocessor
from perception.sources.slot import CapturedFrame
from perception.sources.sync import LockstepSynchronizer, SyncConfig

# (fn, tasks, *, on_result) -> None: runs fn(*task) for each task, reporting (index, result | exception)
Spread = Callable[..., None]


def node_tables(cameras: Sequence[CameraModel], contract: ModelContract | ModelCard) -> list[RemapTable]:
    """One remap table per camera, as the node builds them for this model's input (a card's alignment)."""
    return remap_tables(list(cameras), contract)


def node_preprocessor(tables: Sequence[RemapTable], contract: ModelContract | ModelCard) -> FastPreprocessor:
    """The node's preprocessing, with the model's full normalization: a card's value range (YOLOX: 0-255),
    colour order and pad value, which calibration must share with inference or every range is wrong."""
    return FastPreprocessor(tables, contract.normalization, np.float32)


@dataclass
class FrameSetInput:
    """One engine step: what the node hands to `Engine.run` for a frame set."""

    t_ns: int                   # frame-set (anchor) time
    images: np.ndarray          # [N,3,H,W] float32, owned by this object
    camera_t_ns: np.ndarray     # [N] int64: capture time, or the set's time for a stale camera
    fresh: np.ndarray           # [N] bool
    frames: list[Frame]         # the source frames preprocessed (a stale camera repeats its last frame)


def frame_set_inputs(drive, contract: ModelContract, cameras: Sequence[str] | None = None,
                     max_skew_ms: float = 20.0) -> Iterator[FrameSetInput]:
    """Frame sets of a drive (lockstep sync, first camera anchors) preprocessed as the node does
    (perception/node/node.py): a camera missing from a set is stale (fresh = False) and its batch slot
    holds its last frame, or a black frame before its first one."""
    names = tuple(cameras) if cameras is not None else tuple(drive.cameras)
    models = [drive.rig[n] for n in names]
    tables = node_tables(models, contract)
    pre = node_preprocessor(tables, contract)
    sync = LockstepSynchronizer(SyncConfig(names, names[0], max_skew_ms))
    stream = (CapturedFrame(f.camera, f.t_ns, f.frame, i) for i, f in enumerate(drive.frames(names)))
    last = {n: Frame.from_bgr(np.zeros((m.height, m.width, 3), np.uint8)) for n, m in zip(names, models)}
    for fs in sync.frame_sets(stream):
        for name, captured in fs.frames.items():
            if captured is not None:
                last[name] = captured.frame
        frames = [last[n] for n in names]
        fresh = np.array([fs.frames[n] is not None for n in names])
        times = np.array([fs.frames[n].t_ns if fs.frames[n] is not None else fs.t_ns for n in names], np.int64)
        yield FrameSetInput(fs.t_ns, pre.run(frames).copy(), times, fresh, frames)


class _RecordingEngine(OnnxRuntimeEngine):
    """The float32 ORT engine, keeping a copy of the graph inputs of chosen steps."""

    record = False

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.recorded: list[dict[str, np.ndarray]] = []

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.record:
            self.recorded.append({k: np.array(v, copy=True) for k, v in inputs.items()})
        return super()._infer(inputs)

    def detect(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """A plug-in detector's graph input (one sample per camera for a batch-1 graph)."""
        if self.record:
            name = self.contract.input_name
            batches = [images[n:n + 1] for n in range(images.shape[0])] if self._batch_one else [images]
            self.recorded += [{name: np.array(b, copy=True)} for b in batches]
        return super().detect(images)


@dataclass
class CalibrationSet:
    samples: list[dict[str, np.ndarray]]   # graph inputs, one dict per frame set
    drives: list[str]
    frame_sets_run: int

    def describe(self) -> dict:
        return {"drives": [Path(d).name for d in self.drives], "samples": len(self.samples),
                "frame_sets_run": self.frame_sets_run}


def calibration_set(model: str | os.PathLike, drives: Sequence[str | os.PathLike], max_samples: int = 64,
                    every: int = 2, cameras: Sequence[str] | None = None, threads: int | None = None,
                    *, spread: Spread | None = None) -> CalibrationSet:
    """Stream each drive through the float32 `model` and keep the inputs of every `every`-th frame set,
    up to `max_samples` in all (shared evenly between the drives, in drive order). `spread` runs the drives
    elsewhere (`perception quantize --ray` passes replay.fleet.pool.map_drives bound to a Ray cluster); the
    samples are the same either way."""
    if max_samples < 1 or every < 1:
        raise ValueError("max_samples and every must be >= 1")
    if not drives:
        raise DriveError("calibration needs at least one drive")
    per_drive = math.ceil(max_samples / len(drives))
    tasks = [(str(path), str(model), per_drive, every, None if cameras is None else tuple(cameras), threads)
             for path in drives]
    if spread is not None:
        outcomes = _spread(spread, tasks)
    else:
        outcomes = [drive_samples(*task) for task in tasks]
    samples: list[dict[str, np.ndarray]] = []
    for recorded, _ in outcomes:
        samples += recorded
    return CalibrationSet(samples[:max_samples], [str(d) for d in drives], sum(run for _, run in outcomes))


def drive_samples(path: str, model: str, per_drive: int, every: int, cameras: tuple[str, ...] | None,
                  threads: int | None) -> tuple[list[dict[str, np.ndarray]], int]:
    """The recorded inputs (every `every`-th frame set, at most `per_drive`) of one drive streamed from its
    start through the float32 model, and the frame sets run."""
    from perception.io.drive import open_drive

    engine = _RecordingEngine(model, threads=threads, providers=["CPUExecutionProvider"])
    drive = open_drive(path)
    run = 0
    try:
        names = tuple(cameras) if cameras is not None else tuple(drive.cameras)
        state = engine.initial_state(len(names))
        bar = tqdm(total=per_drive, desc=f"calibration samples {Path(path).name}", unit=" samples",
                   disable=not sys.stderr.isatty())
        for step, fs in enumerate(frame_set_inputs(drive, engine.contract, names)):
            if len(engine.recorded) >= per_drive:
                break
            engine.record = step % every == 0
            _, state = engine.run(fs.images, fs.camera_t_ns, state, fs.fresh)
            bar.update(len(engine.recorded) - bar.n)
            run += 1
        bar.close()
    finally:
        drive.close()
    if not engine.recorded:
        raise DriveError(f"{path}: no complete frame set of cameras {list(names)} to calibrate on")
    return engine.recorded, run


def _spread(spread: Spread, tasks: list[tuple]) -> list[tuple[list[dict[str, np.ndarray]], int]]:
    """drive_samples of every task through `spread`; every drive runs to the end, then failures are reported."""
    outcomes: dict[int, object] = {}
    spread(drive_samples, tasks, on_result=outcomes.__setitem__)
    failed = [f"{tasks[i][0]}: {o}" for i, o in sorted(outcomes.items()) if isinstance(o, BaseException)]
    if failed:
        raise DriveError("calibration failed on " + "; ".join(failed))
    return [outcomes[i] for i in range(len(tasks))]  # type: ignore[misc]
