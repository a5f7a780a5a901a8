"""The node's outputs as messages any Foxglove (or MCAP) tool decodes from their own schemas.

Pure functions, shared by the run recorder (perception/io/record.py) and the live server
(perception/io/foxglove_live.py); the topics and what each carries are in docs/foxglove.md:

- detections -> `foxglove.SceneUpdate` (a cube per object in the `vehicle` frame, coloured by class,
  labelled with id / range / TTC) and `foxglove.ImageAnnotations` per camera;
- hints and health -> JSON (`jsonschema` schemas below; non-finite numbers are null, see each field);
- the rig -> `foxglove.FrameTransforms` (`vehicle` -> each camera's optical frame, ISO 8855 vehicle frame);
- ground truth -> `SceneUpdate` (true size and yaw) and `ImageAnnotations` on their own topics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import numpy as np
from foxglove_schemas_protobuf.Color_pb2 import Color
from foxglove_schemas_protobuf.CubePrimitive_pb2 import CubePrimitive
from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.ImageAnnotations_pb2 import ImageAnnotations
from foxglove_schemas_protobuf.Point2_pb2 import Point2
from foxglove_schemas_protobuf.PointsAnnotation_pb2 import PointsAnnotation
from foxglove_schemas_protobuf.Pose_pb2 import Pose
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.SceneEntity_pb2 import SceneEntity
from foxglove_schemas_protobuf.SceneEntityDeletion_pb2 import SceneEntityDeletion
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from foxglove_schemas_protobuf.TextAnnotation_pb2 import TextAnnotation
from foxglove_schemas_protobuf.TextPrimitive_pb2 import TextPrimitive
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from scipy.spatial.transform import Rotation

from calib.rig import Rig
from perception.io.overlay import GT_COLOR, class_color, object_label
from perception.labels import CLASSES, GroundTruth
from perception.messaging.schemas import DetectionsMessage, HealthMessage, HintsMessage
from perception.track.ranging import RangingConfig

VEHICLE_FRAME = "vehicle"
TRANSFORMS_TOPIC = "/tf"
SCENE_TOPIC = "/perception/scene"
HINTS_JSON_TOPIC = "/perception/hints/json"
HEALTH_JSON_TOPIC = "/perception/health/json"

# Detections carry no extent: draw each class at its typical size (length, width from the ranging model).
_HEIGHT_M = {"car": 1.5, "truck": 3.2, "pedestrian": 1.75, "cyclist": 1.7}
CLASS_SIZE_M: dict[str, tuple[float, float, float]] = {
    name: (float(lw[0]), float(lw[1]), _HEIGHT_M[name])
    for name, lw in zip(CLASSES, RangingConfig().footprint(np.arange(len(CLASSES))))}
_OTHER_SIZE_M = (1.0, 1.0, 1.0)


def annotations_topic(camera: str) -> str:
    return f"/camera/{camera}/annotations"


def ground_truth_annotations_topic(camera: str) -> str:
    return f"/camera/{camera}/ground_truth/annotations"


def ground_truth_scene_topic(camera: str) -> str:
    """Per camera: each camera's labels replace only that camera's previous ones (scenes are per topic)."""
    return f"/camera/{camera}/ground_truth/scene"


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _color(rgb: tuple[float, float, float], a: float = 1.0) -> Color:
    return Color(r=rgb[0], g=rgb[1], b=rgb[2], a=a)


def frame_transforms(rig: Rig, t_ns: int) -> FrameTransforms:
    """`vehicle` -> each camera (frame id = camera name, OpenCV optical axes, as the images' frame_id)."""
    out = FrameTransforms()
    for camera in rig.cameras:
        T = np.asarray(camera.T_vehicle_camera, np.float64)
        x, y, z, w = Rotation.from_matrix(T[:3, :3]).as_quat()
        transform = FrameTransform(parent_frame_id=VEHICLE_FRAME, child_frame_id=camera.name,
                                   translation=Vector3(x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                   rotation=Quaternion(x=x, y=y, z=z, w=w))
        transform.timestamp.FromNanoseconds(t_ns)
        out.transforms.append(transform)
    return out


def detection_label(cls: str, track_id: int, range_m: float, ttc_s: float) -> str:
    text = f"{cls} #{track_id}"
    if math.isfinite(range_m):
        text += f" {range_m:.1f} m"
    if math.isfinite(ttc_s):
        text += f" TTC {ttc_s:.1f} s"
    return text


def _replace_all(t_ns: int) -> SceneUpdate:
    """A scene update that first removes the previous frame set's entities."""
    update = SceneUpdate()
    deletion = SceneEntityDeletion(type=SceneEntityDeletion.ALL)
    deletion.timestamp.FromNanoseconds(t_ns)
    update.deletions.append(deletion)
    return update


def _entity(update: SceneUpdate, t_ns: int, entity_id: str, position: Iterable[float], size: tuple,
            yaw: float, rgb: tuple[float, float, float], alpha: float, label: str) -> None:
    px, py, pz = (float(v) for v in position)
    entity = SceneEntity(frame_id=VEHICLE_FRAME, id=entity_id, frame_locked=True)
    entity.timestamp.FromNanoseconds(t_ns)
    orientation = Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
    entity.cubes.append(CubePrimitive(pose=Pose(position=Vector3(x=px, y=py, z=pz), orientation=orientation),
                                      size=Vector3(x=size[0], y=size[1], z=size[2]), color=_color(rgb, alpha)))
    entity.texts.append(TextPrimitive(pose=Pose(position=Vector3(x=px, y=py, z=pz + size[2] / 2 + 0.5),
                                                orientation=Quaternion(w=1.0)),
                                      billboard=True, font_size=14, scale_invariant=True,
                                      color=_color((1.0, 1.0, 1.0)), text=label))
    update.entities.append(entity)


def scene_update(message: DetectionsMessage) -> SceneUpdate:
    """The tracked objects of one frame set as cubes at their vehicle-frame positions (class-typical size;
    objects with no position are left out)."""
    update = _replace_all(message.frame_ns)
    o = message.objects
    for i in range(len(o)):
        if not np.all(np.isfinite(o.position[i])):
            continue
        cls = message.classes[o.cls[i]]
        _entity(update, message.frame_ns, f"track/{int(o.track_id[i])}", o.position[i],
                CLASS_SIZE_M.get(cls, _OTHER_SIZE_M), 0.0, class_color(cls), 0.3 if o.coasting[i] else 0.6,
                detection_label(cls, int(o.track_id[i]), float(o.range_m[i]), float(o.ttc_s[i])))
    return update


def _box_annotation(annotations: ImageAnnotations, t_ns: int, box: Iterable[float],
                    rgb: tuple[float, float, float], alpha: float, label: str) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    points = PointsAnnotation(type=PointsAnnotation.LINE_LOOP, thickness=2, outline_color=_color(rgb, alpha),
                              points=[Point2(x=x0, y=y0), Point2(x=x1, y=y0), Point2(x=x1, y=y1),
                                      Point2(x=x0, y=y1)])
    points.timestamp.FromNanoseconds(t_ns)
    annotations.points.append(points)
    if label:
        text = TextAnnotation(position=Point2(x=x0, y=y0 - 2), font_size=14, text=label,
                              text_color=_color((1.0, 1.0, 1.0)) if rgb != GT_COLOR else _color((0.0, 0.0, 0.0)),
                              background_color=_color(rgb, 0.8 * alpha))
        text.timestamp.FromNanoseconds(t_ns)
        annotations.texts.append(text)


def image_annotations(message: DetectionsMessage) -> dict[str, tuple[int, ImageAnnotations]]:
    """camera -> (capture time, its boxes) for every camera with a fresh frame in this frame set (a stale
    camera's boxes were drawn with its frame already)."""
    out: dict[str, tuple[int, ImageAnnotations]] = {}
    o = message.objects
    for c, camera in enumerate(message.diag.cameras):
        t_ns = int(message.diag.capture_ns[c])
        if t_ns < 0 or message.stale[c]:
            continue
        annotations = ImageAnnotations()
        for i in map(int, (o.camera == c).nonzero()[0]):
            cls = message.classes[o.cls[i]]
            _box_annotation(annotations, t_ns, o.box[i], class_color(cls), 0.5 if o.coasting[i] else 1.0,
                            object_label(cls, int(o.track_id[i]), float(o.score[i]), float(o.range_m[i]),
                                         bool(o.coasting[i])))
        out[camera] = (t_ns, annotations)
    return out


def ground_truth_scene(gt: GroundTruth) -> SceneUpdate:
    """One camera frame's labelled objects (true size and heading), white, ids prefixed `gt/`."""
    update = _replace_all(gt.t_ns)
    for obj in gt.objects:
        _entity(update, gt.t_ns, f"gt/{obj.id}", obj.position, obj.size, obj.yaw, GT_COLOR, 0.25,
                f"gt {obj.cls} #{obj.id} {obj.range:.1f} m")
    return update


def ground_truth_annotations(gt: GroundTruth) -> ImageAnnotations:
    annotations = ImageAnnotations()
    for box in gt.boxes:
        _box_annotation(annotations, gt.t_ns, box.box, GT_COLOR, 0.8, f"gt {box.cls} #{box.id}")
    return annotations


def _number(description: str) -> dict:
    return {"type": ["number", "null"], "description": description}


def _diag_schema() -> dict:
    return {"type": "object", "required": ["model_id", "cameras", "capture_ns", "dropped_frames", "stage_ns"],
            "properties": {"model_id": {"type": "string"},
                           "cameras": {"type": "array", "items": {"type": "string"}},
                           "capture_ns": {"type": "array", "items": {"type": "integer"},
                                          "description": "per camera, latest frame's capture time, -1 none yet"},
                           "dropped_frames": {"type": "array", "items": {"type": "integer"}},
                           "stage_ns": {"type": "object", "additionalProperties": {"type": "integer"}}}}


HINTS_SCHEMA: dict = {
    "title": "perception.hints.json", "type": "object",
    "description": "Driving hints of one frame set (docs/messages.md); null numbers are infinite (no cap, "
                   "nothing seen, not closing)",
    "required": ["frame_ns", "lead", "brake", "speed_cap_mps", "free_distance_m", "cut_in_ids", "confidence",
                 "diag"],
    "properties": {
        "frame_ns": {"type": "integer"},
        "lead": {"type": ["object", "null"], "required": ["track_id", "gap_m", "rel_speed_mps", "ttc_s"],
                 "properties": {"track_id": {"type": "integer"}, "gap_m": _number("m, ego front bumper to the lead's nearest edge"),
                                "rel_speed_mps": _number("range rate, m/s, negative closing"),
                                "ttc_s": _number("s, null when not closing")}},
        "brake": {"enum": ["none", "prepare", "brake"]},
        "speed_cap_mps": _number("m/s, null = no cap"),
        "free_distance_m": _number("m, null = nothing seen"),
        "cut_in_ids": {"type": "array", "items": {"type": "integer"}},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "diag": _diag_schema(),
    },
}

HEALTH_SCHEMA: dict = {
    "title": "perception.health.json", "type": "object",
    "description": "Node health (docs/messages.md)",
    "required": ["state", "reasons", "cameras", "latency_p50_ms", "latency_p99_ms", "rate_hz", "drop_ratio",
                 "bad_frames", "publish_drops", "diag"],
    "properties": {
        "state": {"enum": ["ok", "degraded", "fault"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "cameras": {"type": "object", "additionalProperties": {"enum": ["ok", "stale", "lost"]},
                    "description": "camera name -> state"},
        "latency_p50_ms": _number("capture -> publish, over the health window"),
        "latency_p99_ms": _number("capture -> publish, over the health window"),
        "rate_hz": _number("frame sets per second"),
        "drop_ratio": _number("frames dropped / captured over the window"),
        "bad_frames": {"type": "integer"},
        "publish_drops": {"type": "integer"},
        "diag": _diag_schema(),
    },
}


def _diag(message: HintsMessage | HealthMessage) -> dict:
    d = message.diag
    return {"model_id": d.model_id, "cameras": list(d.cameras), "capture_ns": [int(v) for v in d.capture_ns],
            "dropped_frames": [int(v) for v in d.dropped_frames], "stage_ns": dict(d.stage_ns)}


def hints_json(message: HintsMessage) -> bytes:
    lead = message.lead
    value = {
        "frame_ns": message.frame_ns,
        "lead": None if lead is None else {"track_id": lead.track_id, "gap_m": _finite(lead.gap_m),
                                           "rel_speed_mps": _finite(lead.rel_speed_mps),
                                           "ttc_s": _finite(lead.ttc_s)},
        "brake": message.brake, "speed_cap_mps": _finite(message.speed_cap_mps),
        "free_distance_m": _finite(message.free_distance_m),
        "cut_in_ids": [int(v) for v in message.cut_in_ids], "confidence": message.confidence,
        "diag": _diag(message)}
    return json.dumps(value, allow_nan=False).encode()


def health_json(message: HealthMessage) -> bytes:
    value = {
        "state": message.state, "reasons": list(message.reasons),
        "cameras": dict(zip(message.diag.cameras, message.camera_states)),
        "latency_p50_ms": _finite(message.latency_p50_ms), "latency_p99_ms": _finite(message.latency_p99_ms),
        "rate_hz": _finite(message.rate_hz), "drop_ratio": _finite(message.drop_ratio),
        "bad_frames": message.bad_frames, "publish_drops": message.publish_drops, "diag": _diag(message)}
    return json.dumps(value, allow_nan=False).encode()


__all__ = ["CLASS_SIZE_M", "HEALTH_JSON_TOPIC", "HEALTH_SCHEMA", "HINTS_JSON_TOPIC",
           "HINTS_SCHEMA", "SCENE_TOPIC", "TRANSFORMS_TOPIC", "VEHICLE_FRAME", "annotations_topic",
           "detection_label", "frame_transforms", "ground_truth_annotations", "ground_truth_annotations_topic",
           "ground_truth_scene", "ground_truth_scene_topic", "health_json", "hints_json", "image_annotations", "scene_update"]
