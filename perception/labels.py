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
     "ego": {"speed": float}}               # m/s, forward; absent where unknown (auto-labelled video)

Automatic labels (`perception autolabel`, docs/autolabel.md) add to each box an optional

    "auto": {"teacher": str,                # model id of the teacher that produced it
             "score": float,                # teacher score of this box, [0, 1] (interpolated: between neighbours)
             "track_score": float,          # mean teacher score over the box's track, [0, 1]
             "origin": "teacher" | "interpolated" | "corrected"}

and have no `objects` (no 3D labels). Readers that do not know the key ignore it; boxes without it are
exact (synthetic) or hand labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from perception.errors import DriveError

CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist")
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}
AUTO_ORIGINS: tuple[str, ...] = ("teacher", "interpolated", "corrected")


@dataclass(frozen=True)
class AutoLabel:
    """Provenance of an automatic label: which teacher, how sure, and whether cleaning or a correction made it."""
    teacher: str
    score: float
    track_score: float
    origin: str  # one of AUTO_ORIGINS

    def to_dict(self) -> dict:
        return {"teacher": self.teacher, "score": self.score, "track_score": self.track_score, "origin": self.origin}

    @staticmethod
    def from_dict(d: object) -> "AutoLabel":
        if not isinstance(d, dict):
            raise ValueError("auto must be an object")
        origin = d["origin"]
        if origin not in AUTO_ORIGINS:
            raise ValueError(f"auto.origin {origin!r} is not one of {', '.join(AUTO_ORIGINS)}")
        teacher = d["teacher"]
        if not isinstance(teacher, str):
            raise ValueError(f"auto.teacher must be a string, got {teacher!r}")
        score, track_score = _floats([d["score"], d["track_score"]], 2, "auto score and track_score")
        if not (0.0 <= score <= 1.0 and 0.0 <= track_score <= 1.0):
            raise ValueError(f"auto scores must be in [0, 1], got {score}, {track_score}")
        return AutoLabel(teacher, score, track_score, str(origin))


@dataclass(frozen=True)
class GroundTruthBox:
    id: int
    cls: str
    box: tuple[float, float, float, float]
    truncation: float
    occlusion: float
    auto: AutoLabel | None = None  # set on automatic labels only

    def to_dict(self) -> dict:
        d = {"id": self.id, "cls": self.cls, "box": list(self.box), "truncation": self.truncation,
             "occlusion": self.occlusion}
        if self.auto is not None:
            d["auto"] = self.auto.to_dict()
        return d


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
    ego_speed: float | None  # None: unknown

    def to_dict(self) -> dict:
        d = {
            "camera": self.camera,
            "t_ns": self.t_ns,
            "boxes": [b.to_dict() for b in self.boxes],
            "objects": [
                {"id": o.id, "cls": o.cls, "position": list(o.position), "velocity": list(o.velocity),
                 "size": list(o.size), "yaw": o.yaw}
                for o in self.objects
            ],
        }
        if self.ego_speed is not None:
            d["ego"] = {"speed": self.ego_speed}
        return d

    @staticmethod
    def from_dict(d: object, where: str) -> "GroundTruth":
        """Validate and convert; `where` names the file/message for error messages."""
        try:
            if not isinstance(d, dict):
                raise ValueError("not an object")
            boxes = tuple(
                GroundTruthBox(int(b["id"]), _cls(b["cls"]), _floats(b["box"], 4, "box"),
                               float(b["truncation"]), float(b["occlusion"]),
                               AutoLabel.from_dict(b["auto"]) if "auto" in b else None)
                for b in d["boxes"]
            )
            objects = tuple(
                GroundTruthObject(int(o["id"]), _cls(o["cls"]), _floats(o["position"], 3, "position"),
                                  _floats(o["velocity"], 3, "velocity"), _floats(o["size"], 3, "size"),
                                  float(o["yaw"]))
                for o in d["objects"]
            )
            ego = float(d["ego"]["speed"]) if "ego" in d else None
            return GroundTruth(str(d["camera"]), int(d["t_ns"]), boxes, objects, ego)
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
