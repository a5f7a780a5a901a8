"""Builders shared by the replay tests (no tests here): a small labelled drive and a simulated node.

The drive is real (DriveWriter, JPEG images, ground truth from projecting 3-D boxes through the rig's
camera models). The simulated node stands in for the real one until replay.runner exists: it derives
detections, hints and health from the ground truth with seeded noise, misses, false positives and an ID
switch, so that metrics, compare and report have something realistic to measure. Everything is a
function of its arguments (no wall time), so two calls give identical messages.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np

from calib.defaults import default_rig
from calib.rig import Rig
from perception.labels import CLASSES, GroundTruth, GroundTruthBox, GroundTruthObject
from perception.messaging.schemas import (
    OBJECT_FIELDS, DetectionsMessage, Diagnostics, HealthMessage, HintsMessage, Message, WireLead, WireObjects,
)
from perception.io.drive import DriveReader, DriveWriter
from replay.metrics.align import gap_and_ttc
from perception.io.record import RunRecorder

T0 = 1_700_000_000_000_000_000
FPS = 10.0
EGO_FRONT_M = 3.7
SIZES = {"car": (4.5, 1.8, 1.5), "truck": (8.0, 2.5, 3.2), "pedestrian": (0.6, 0.6, 1.75), "cyclist": (1.8, 0.6, 1.7)}
# id, class, start position (x, y) in m, velocity relative to the ego (vx, vy) in m/s
ACTORS = ((1, "car", (45.0, 0.0), (-8.0, 0.0)),        # the lead, closing: prepare, then brake is needed
          (2, "truck", (25.0, -3.5), (1.0, 0.0)),
          (3, "pedestrian", (14.0, 4.0), (-1.0, -0.3)),
          (4, "cyclist", (12.0, 2.6), (1.5, 0.0)),
          (5, "car", (60.0, 3.5), (-2.0, 0.0)))


def small_rig(num_cameras: int = 2, width: int = 320, height: int = 240) -> Rig:
    cameras = []
    for c in default_rig(num_cameras).cameras:
        sx, sy = width / c.width, height / c.height
        cameras.append(dataclasses.replace(c, width=width, height=height, fx=c.fx * sx, fy=c.fy * sy,
                                           cx=(c.cx + 0.5) * sx - 0.5, cy=(c.cy + 0.5) * sy - 0.5))
    return Rig(cameras)


def scene(t_s: float) -> list[GroundTruthObject]:
    return [GroundTruthObject(i, cls, (x + vx * t_s, y + vy * t_s, SIZES[cls][2] / 2), (vx, vy, 0.0), SIZES[cls], 0.0)
            for i, cls, (x, y), (vx, vy) in ACTORS]


def _box_of(camera, obj: GroundTruthObject) -> tuple[float, float, float, float] | None:
    (l, w, h), (x, y, _) = obj.size, obj.position
    corners = np.array([[x + sx * l / 2, y + sy * w / 2, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, h)])
    uv, in_front = camera.project(corners)
    if not in_front.all():
        return None
    x0, y0 = np.clip(uv.min(axis=0), 0, [camera.width - 1, camera.height - 1])
    x1, y1 = np.clip(uv.max(axis=0), 0, [camera.width - 1, camera.height - 1])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def write_drive(path: Path, rig: Rig | None = None, frames: int = 40, labels: bool = True) -> Path:
    """A drive of `frames` ticks at 10 Hz; the second camera lags the first by 3 ms."""
    rig = rig or small_rig()
    colors = {"car": (200, 120, 40), "truck": (150, 90, 200), "pedestrian": (40, 160, 230), "cyclist": (80, 200, 80)}
    with DriveWriter(path, rig) as writer:
        for k in range(frames):
            for c, camera in enumerate(rig.cameras):
                t_ns = T0 + round(k * 1e9 / FPS) + c * 3_000_000
                objects = scene((t_ns - T0) / 1e9)
                image = np.full((camera.height, camera.width, 3), 90, np.uint8)
                image[: camera.height // 2] = (170, 150, 120)
                boxes = []
                for obj in sorted(objects, key=lambda o: -o.range):
                    box = _box_of(camera, obj)
                    if box is None:
                        continue
                    cv2.rectangle(image, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), colors[obj.cls], -1)
                    boxes.append(GroundTruthBox(obj.id, obj.cls, box, 0.0, 0.0))
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                writer.write_frame(camera.name, t_ns, jpeg.tobytes())
                if labels:
                    writer.write_ground_truth(GroundTruth(camera.name, t_ns, tuple(boxes), tuple(objects), 10.0))
    return path


def objects_of(rows: list[dict]) -> WireObjects:
    if not rows:
        return WireObjects.empty()
    return WireObjects(**{name: np.array([r[name] for r in rows], dtype) for name, (dtype, _) in OBJECT_FIELDS.items()})


def simulated_outputs(drive: Path, seed: int = 0, box_noise_px: float = 1.5, range_noise: float = 0.03,
                      score_shift: float = 0.0, drop_ids: tuple[int, ...] = (), engine_ms: float = 8.0,
                      lag_frames: int = 1) -> list[Message]:
    """What a node might publish for `drive`: one frame set per tick of the first camera."""
    with DriveReader(drive) as reader:
        rig = reader.rig
        labels = {(gt.camera, gt.t_ns): gt for gt in reader.ground_truth()}
        times = {c: sorted(t for cam, t in labels if cam == c) for c in rig.names}
    messages: list[Message] = []
    stage = "none"
    need_history: list[int] = []
    for k, t_ns in enumerate(times[rig.names[0]]):
        capture = [max([t for t in times[c] if t <= t_ns + 5_000_000], default=-1) for c in rig.names]
        rows = []
        for c, camera in enumerate(rig.names):
            gt = labels.get((camera, capture[c]))
            if gt is None:
                continue
            by_id = {o.id: o for o in gt.objects}
            for b in gt.boxes:
                rng = np.random.default_rng([seed, k, c, b.id])  # per object: dropping one changes no other
                if b.id in drop_ids or rng.random() < 0.05:
                    continue
                obj = by_id[b.id]
                box = np.array(b.box) + rng.normal(0, box_noise_px, 4)
                track = 100 + b.id if not (b.id == 3 and k >= 25) else 200 + b.id  # an ID switch at frame 25
                gap, ttc = gap_and_ttc(obj, EGO_FRONT_M)
                rng_m = obj.range * (1 + rng.normal(0, range_noise))
                rows.append({"track_id": track, "camera": c, "cls": CLASSES.index(b.cls),
                             "score": float(np.clip(0.9 - 0.004 * obj.range + rng.normal(0, 0.05) + score_shift, 0.05, 1)),
                             "box": box, "range_m": rng_m, "range_source": 1,
                             "position": (obj.position[0], obj.position[1], 0.0),
                             "velocity": np.array(obj.velocity) + rng.normal(0, 0.3, 3) * (1, 1, 0),
                             "ttc_s": ttc * (1 + rng.normal(0, 0.05)), "age_s": k / FPS, "coasting": False})
            rng = np.random.default_rng([seed, k, c, 0])
            if rng.random() < 0.3:  # a false positive
                x, y = rng.uniform(0, 250), rng.uniform(100, 200)
                rows.append({"track_id": 900 + k, "camera": c, "cls": 0, "score": float(rng.uniform(0.1, 0.5)),
                             "box": (x, y, x + 30, y + 20), "range_m": math.nan, "range_source": 0,
                             "position": (math.nan,) * 3, "velocity": (math.nan,) * 3, "ttc_s": math.nan,
                             "age_s": 0.0, "coasting": k % 2 == 1})
        rng = np.random.default_rng([seed, k])
        stages = {"sync": 200_000, "preprocess": 1_500_000 + int(rng.integers(0, 300_000)),
                  "engine": int(engine_ms * 1e6 * (1 + 0.1 * rng.random())), "decode": 400_000, "track": 300_000}
        diag = Diagnostics("sim-1", rig.names, capture, [0] * len(rig), stages)
        messages.append(DetectionsMessage(diag, t_ns, [False] * len(rig), CLASSES, objects_of(rows)))
        lead = scene((t_ns - T0) / 1e9)[0]
        gap, ttc = gap_and_ttc(lead, EGO_FRONT_M)
        need_history.append(2 if ttc < 2.0 or gap < 4.0 else 1 if ttc < 4.0 or gap < 8.0 else 0)
        level = need_history[max(0, len(need_history) - 1 - lag_frames)]
        stage = ("none", "prepare", "brake")[level]
        messages.append(HintsMessage(diag, t_ns, WireLead(101, lead.range, lead.velocity[0], ttc), stage,
                                     math.sqrt(2 * 2.0 * max(0.0, gap - 4.0)), gap, [], 0.9))
        if k % 5 == 4:
            messages.append(HealthMessage(diag, "ok", (), ("ok",) * len(rig), 12.0, 20.0, FPS, 0.0, 0, 0))
    return messages


def record(path: Path, rig: Rig, messages: list[Message], drive: Path | None = None,
           copy_inputs: bool = False) -> Path:
    with RunRecorder(path, rig, drive_path=drive, copy_inputs=copy_inputs, clock=lambda: 0) as recorder:
        for message in messages:
            recorder.write(message)
    return path


def simulated_replay(drive: str | Path, out: str | Path, config: object = None) -> Path:
    """replay.runner.replay_drive's signature, with the simulated node (config: keyword overrides)."""
    with DriveReader(drive) as reader:
        rig = reader.rig
    return record(Path(out), rig, simulated_outputs(Path(drive), **(config or {})), Path(drive))
