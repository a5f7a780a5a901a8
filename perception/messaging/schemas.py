"""The messages the node publishes, as typed Python objects (fields, units and frames: docs/messages.md).

Pure data: building the wire bytes is perception.messaging.codec, sockets are publisher / subscriber.
Numeric per-object and per-camera data are numpy arrays with fixed dtypes (they travel as binary).
The wire types are named apart from the node's internal ones (perception.track.objects.TrackedObjects,
perception.hints.hints.Lead): `WireObjects`, `WireLead`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from perception.track.ranging import RangeSource  # noqa: F401 - the wire codes of range_source

from perception.messaging.services import MAX_LIST_LEN, MAX_MAP_LEN, MAX_STR_LEN

BrakeStage = Literal["none", "prepare", "brake"]
HealthState = Literal["ok", "degraded", "fault"]
CameraState = Literal["ok", "stale", "lost"]
BRAKE_STAGES: tuple[str, ...] = ("none", "prepare", "brake")
HEALTH_STATES: tuple[str, ...] = ("ok", "degraded", "fault")
CAMERA_STATES: tuple[str, ...] = ("ok", "stale", "lost")


# The wire record of one object (detections.objects since schema 2, docs/messages.md): little-endian, C struct layout
# (every field at a multiple of its size, 80 bytes with 6 bytes of zero padding at the end), so that the
# columns of a decoded table are aligned; the floats that must be finite (score, box, age_s) are adjacent so
# that one vectorised check covers them. One table drives construction checks, encoding and decoding;
# changing it bumps the detections schema.
OBJECT_RECORD = np.dtype([
    ("track_id", "<i8"), ("camera", "<i4"), ("cls", "<i4"), ("score", "<f4"), ("box", "<f4", (4,)), ("age_s", "<f4"),
    ("range_m", "<f4"), ("position", "<f4", (3,)), ("velocity", "<f4", (3,)), ("ttc_s", "<f4"),
    ("range_source", "u1"), ("coasting", "?"),
], align=True)
# name -> (dtype, shape of one row)
OBJECT_FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    name: (OBJECT_RECORD[name].base, OBJECT_RECORD[name].shape) for name in OBJECT_RECORD.names
}


@dataclass(eq=False)
class WireObjects:
    """Tracked objects of one frame set: parallel arrays, one row per object."""
    track_id: np.ndarray      # [N] int64, persistent while the track lives
    camera: np.ndarray        # [N] int32, index into Diagnostics.cameras: the camera `box` is in
    cls: np.ndarray           # [N] int32, index into DetectionsMessage.classes
    score: np.ndarray         # [N] float32 in [0, 1]
    box: np.ndarray           # [N, 4] float32, x0 y0 x1 y1, original pixels of `camera`
    range_m: np.ndarray       # [N] float32, horizontal distance hypot(x, y) from the vehicle origin (the rear
                              # axle centre, not the bumper) (m), NaN unknown
    range_source: np.ndarray  # [N] uint8, RangeSource
    position: np.ndarray      # [N, 3] float32, box centre in the vehicle frame (m)
    velocity: np.ndarray      # [N, 3] float32, relative to the ego vehicle, vehicle frame (m/s)
    ttc_s: np.ndarray         # [N] float32, time to collision (s); inf not closing, NaN unknown
    age_s: np.ndarray         # [N] float32, s since the object was first seen
    coasting: np.ndarray      # [N] bool, predicted only: no detection matched in this frame set

    def __post_init__(self) -> None:
        n = None
        for name, (dtype, row_shape) in OBJECT_FIELDS.items():
            value = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if value.ndim != 1 + len(row_shape) or value.shape[1:] != row_shape:
                raise ValueError(f"WireObjects.{name}: shape {value.shape}, expected [N, *{row_shape}]")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(f"WireObjects.{name}: {value.shape[0]} rows, other fields have {n}")
            setattr(self, name, value)

    def __len__(self) -> int:
        return int(self.track_id.shape[0])

    def __getattr__(self, name: str) -> np.ndarray:
        """A column of objects made by from_records, viewed on first access (only called for a missing one)."""
        records = self.__dict__.get("_records")
        if records is None or name not in OBJECT_FIELDS:
            raise AttributeError(f"'WireObjects' object has no attribute {name!r}")
        column = self.__dict__[name] = records[name]
        return column

    @classmethod
    def from_records(cls, records: np.ndarray) -> "WireObjects":
        """Columns viewing `records` (an OBJECT_RECORD array), without copies, each made when first read: the
        decoder's path (a subscriber pays only for the columns it reads)."""
        if records.dtype != OBJECT_RECORD or records.ndim != 1:
            raise ValueError(f"WireObjects.from_records: {records.dtype} array of {records.ndim} dims, "
                             f"expected a 1-d OBJECT_RECORD array")
        objects = cls.__new__(cls)  # the record's dtype fixes every column's dtype and shape: no re-checks
        objects.__dict__["_records"] = records
        return objects

    def to_records(self) -> np.ndarray:
        """The objects as one OBJECT_RECORD array (the encoder's path)."""
        records = np.zeros(len(self), OBJECT_RECORD)  # zero padding: the same objects, the same bytes
        for name in OBJECT_RECORD.names:
            records[name] = getattr(self, name)
        return records

    @staticmethod
    def empty() -> "WireObjects":
        return WireObjects(**{name: np.zeros((0, *shape), dtype)
                                 for name, (dtype, shape) in OBJECT_FIELDS.items()})


@dataclass(eq=False)
class Diagnostics:
    """Carried by every message (as openpilot's modelV2 carries its timings)."""
    model_id: str
    cameras: tuple[str, ...]             # rig order; per-camera arrays below are aligned with it
    capture_ns: np.ndarray               # [C] int64, capture time of each camera's latest frame, -1 none yet
    dropped_frames: np.ndarray           # [C] int64, frames dropped per camera since start
    stage_ns: dict[str, int] = field(default_factory=dict)  # duration of each stage for this frame set

    def __post_init__(self) -> None:
        self.model_id = str(self.model_id)
        self.cameras = tuple(str(c) for c in self.cameras)
        self.stage_ns = {str(k): int(v) for k, v in self.stage_ns.items()}
        # the limits every subscriber decodes with (services.py): fail here, at the node, not at the readers
        if len(self.cameras) > MAX_LIST_LEN or len(self.stage_ns) > MAX_MAP_LEN or any(
                len(t.encode()) > MAX_STR_LEN for t in (self.model_id, *self.cameras, *self.stage_ns)):
            raise ValueError(f"Diagnostics: more than {MAX_LIST_LEN} cameras, {MAX_MAP_LEN} stages or a name "
                             f"longer than {MAX_STR_LEN} bytes")
        for name in ("capture_ns", "dropped_frames"):
            value = np.ascontiguousarray(getattr(self, name), dtype="<i8")
            if value.shape != (len(self.cameras),):
                raise ValueError(f"Diagnostics.{name}: shape {value.shape}, expected ({len(self.cameras)},)")
            setattr(self, name, value)


@dataclass(eq=False)
class DetectionsMessage:
    diag: Diagnostics
    frame_ns: int                 # frame-set time: the anchor camera's capture time
    stale: np.ndarray             # [C] bool, camera had no fresh frame for this set
    classes: tuple[str, ...]      # class names, indexed by objects.cls
    objects: WireObjects

    def __post_init__(self) -> None:
        self.frame_ns = int(self.frame_ns)
        self.classes = tuple(str(c) for c in self.classes)
        self.stale = np.ascontiguousarray(self.stale, dtype=bool)
        if self.stale.shape != (len(self.diag.cameras),):
            raise ValueError(f"DetectionsMessage.stale: shape {self.stale.shape}, "
                             f"expected ({len(self.diag.cameras)},)")


@dataclass
class WireLead:
    """The object the ego vehicle follows: closest in its path ahead."""
    track_id: int
    gap_m: float          # m, from the ego front bumper to the lead's nearest edge (not the origin range)
    rel_speed_mps: float  # rate of the gap (m/s), negative when closing
    ttc_s: float          # s, gap / closing speed; inf when not closing

    def __post_init__(self) -> None:  # numpy scalars in, plain Python numbers for msgpack
        self.track_id = int(self.track_id)
        self.gap_m, self.rel_speed_mps, self.ttc_s = float(self.gap_m), float(self.rel_speed_mps), float(self.ttc_s)


@dataclass(eq=False)
class HintsMessage:
    diag: Diagnostics
    frame_ns: int
    lead: WireLead | None
    brake: BrakeStage
    speed_cap_mps: float     # highest speed that can stop within the free distance; inf = no cap
    free_distance_m: float   # free distance along the path ahead; inf = nothing seen
    cut_in_ids: np.ndarray   # [K] int64, track ids cutting into the ego lane
    confidence: float        # [0, 1]

    def __post_init__(self) -> None:
        if self.brake not in BRAKE_STAGES:
            raise ValueError(f"HintsMessage.brake: {self.brake!r} is not one of {BRAKE_STAGES}")
        self.frame_ns = int(self.frame_ns)
        self.speed_cap_mps, self.free_distance_m = float(self.speed_cap_mps), float(self.free_distance_m)
        self.confidence = float(self.confidence)
        self.cut_in_ids = np.ascontiguousarray(self.cut_in_ids, dtype="<i8").reshape(-1)


@dataclass(eq=False)
class HealthMessage:
    diag: Diagnostics
    state: HealthState
    reasons: tuple[str, ...]           # why not ok, e.g. "camera front stale", "frame drop 31 % > 20 %"
    camera_states: tuple[CameraState, ...]  # aligned with diag.cameras
    latency_p50_ms: float              # capture -> publish, over the health window
    latency_p99_ms: float
    rate_hz: float                     # frame sets per second over the health window
    drop_ratio: float                  # frames dropped / frames captured over the health window
    bad_frames: int                    # corrupt frames counted (and skipped) since start
    publish_drops: int                 # messages the publisher could not send since start

    def __post_init__(self) -> None:
        if self.state not in HEALTH_STATES:
            raise ValueError(f"HealthMessage.state: {self.state!r} is not one of {HEALTH_STATES}")
        if isinstance(self.reasons, str) or len(self.reasons) > MAX_LIST_LEN:
            raise ValueError(f"HealthMessage.reasons: must be a sequence of at most {MAX_LIST_LEN} strings")
        self.reasons = tuple(_clip(str(r)) for r in self.reasons)
        self.camera_states = tuple(self.camera_states)
        self.latency_p50_ms, self.latency_p99_ms = float(self.latency_p50_ms), float(self.latency_p99_ms)
        self.rate_hz, self.drop_ratio = float(self.rate_hz), float(self.drop_ratio)
        self.bad_frames, self.publish_drops = int(self.bad_frames), int(self.publish_drops)
        if not set(self.camera_states) <= set(CAMERA_STATES):
            raise ValueError(f"HealthMessage.camera_states: {self.camera_states} not all in {CAMERA_STATES}")
        if len(self.camera_states) != len(self.diag.cameras):
            raise ValueError(f"HealthMessage.camera_states: {len(self.camera_states)} states for "
                             f"{len(self.diag.cameras)} cameras")


def _clip(text: str) -> str:
    """Human-readable text within MAX_STR_LEN bytes of UTF-8 (at most 4 bytes per character)."""
    return text if len(text) <= MAX_STR_LEN // 4 else text[:MAX_STR_LEN // 4 - 1] + "…"


Message = DetectionsMessage | HintsMessage | HealthMessage

TOPIC_OF: dict[type, str] = {DetectionsMessage: "detections", HintsMessage: "hints", HealthMessage: "health"}


@dataclass(frozen=True, eq=False)
class Envelope:
    """One received message with what the publisher stamped on it."""
    topic: str
    seq: int          # per topic, +1 per publication (also for messages the publisher had to drop)
    publish_ns: int   # publisher's clock (CLOCK_REALTIME unless injected) when it was sent
    message: Message
