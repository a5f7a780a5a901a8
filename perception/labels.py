"""Object classes and the ground-truth label schema shared by drives, training and metrics.

Schema of one ground-truth message (JSON, one per camera frame, topic `/camera/<name>/ground_truth`,
log time = that frame's capture time in ns); documented in docs/drive_format.md:

    {"camera": str, "t_ns": int,
     "boxes":   [{"id": int, "cls": str, "box": [x0, y0, x1, y1],   # visible extent, camera pixels
                  "truncation": float, "occlusion": float}],        # fractions in [0, 1]
     "objects": [{"id": int, "cls": str,
                  "position": [x, y, z],   # box centre, vehicle frame (ISO 8855), m
                  "velocity": [vx, vy, vz],  # relative to the ego vehicle, vehicle frame, m/s
                  "size": [length, width, height], "yaw": float}],  # m, rad (about +z)
     "ego": {"speed": float}}               # m/s, forward
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from perception.errors import DriveError

CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist")
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}


@dataclass(frozen=True)
class GroundTruthBox:
    id: int
    cls: str
    box: tuple[float, float, float, float]
    truncation: float
    occlusion: float


@dataclass(frozen=True)
class GroundTruthObject:
    id: int
    cls: str
    position: tuple[float, float, float]
    velocity: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float

    @property
    def range(self) -> float:
        return math.hypot(self.position[0], self.position[1])


@dataclass(frozen=True)
class GroundTruth:
    camera: str
    t_ns: int
    boxes: tuple[GroundTruthBox, ...]
    objects: tuple[GroundTruthObject, ...]
    ego_speed: float

    def to_dict(self) -> dict:
        return {
            "camera": self.camera,
            "t_ns": self.t_ns,
            "boxes": [
                {"id": b.id, "cls": b.cls, "box": list(b.box), "truncation": b.truncation, "occlusion": b.occlusion}
                for b in self.boxes
            ],
            "objects": [
                {"id": o.id, "cls": o.cls, "position": list(o.position), "velocity": list(o.velocity),
                 "size": list(o.size), "yaw": o.yaw}
                for o in self.objects
            ],
            "ego": {"speed": self.ego_speed},
        }

    @staticmethod
    def from_dict(d: object, where: str) -> "GroundTruth":
        """Validate and convert; `where` names the file/message for error messages."""
        try:
            if not isinstance(d, dict):
                raise ValueError("not an object")
            boxes = tuple(
                GroundTruthBox(int(b["id"]), _cls(b["cls"]), _floats(b["box"], 4, "box"),
                               float(b["truncation"]), float(b["occlusion"]))
                for b in d["boxes"]
            )
            objects = tuple(
                GroundTruthObject(int(o["id"]), _cls(o["cls"]), _floats(o["position"], 3, "position"),
                                  _floats(o["velocity"], 3, "velocity"), _floats(o["size"], 3, "size"),
                                  float(o["yaw"]))
                for o in d["objects"]
            )
            return GroundTruth(str(d["camera"]), int(d["t_ns"]), boxes, objects, float(d["ego"]["speed"]))
        except KeyError as e:
            raise DriveError(f"{where}: ground truth is missing key {e}") from None
        except (TypeError, ValueError) as e:
            raise DriveError(f"{where}: invalid ground truth: {e}") from None


def _cls(name: object) -> str:
    if name not in CLASS_INDEX:
        raise ValueError(f"unknown class {name!r} (known: {', '.join(CLASSES)})")
    return str(name)


def _floats(values: object, n: int, field: str) -> tuple:
    vals = tuple(float(v) for v in values)  # type: ignore[union-attr]
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{field} must be {n} finite numbers, got {values!r}")
    return vals
