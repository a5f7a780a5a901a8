"""The node's detections as ROS 2 messages (CDR, `ros2msg` schemas), so an Autoware stack can replay them:

- `/perception/objects`: `autoware_perception_msgs/msg/TrackedObjects` per frame set, frame `vehicle`
  (ISO 8855, as `/tf`); pose = the object's position, orientation unavailable (identity), twist = velocity
  relative to the ego vehicle (the node does not know the ground speed), shape = the class-typical box;
  object_id = the track id as a little-endian int64 in the UUID's first 8 bytes;
- `/camera/<name>/detections_2d`: `vision_msgs/msg/Detection2DArray` of that camera's boxes, at its capture
  time, frame = the camera name; `id` = the track id, `class_id` = the class name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mcap_ros2._dynamic import serialize_dynamic

from perception.io.foxglove_out import CLASS_SIZE_M, VEHICLE_FRAME
from perception.messaging.schemas import DetectionsMessage

TRACKED_OBJECTS = "autoware_perception_msgs/msg/TrackedObjects"
DETECTION_2D_ARRAY = "vision_msgs/msg/Detection2DArray"
OBJECTS_TOPIC = "/perception/objects"


def detections_2d_topic(camera: str) -> str:
    return f"/camera/{camera}/detections_2d"


_COMMON = {
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
    "geometry_msgs/PoseWithCovariance": "geometry_msgs/Pose pose\nfloat64[36] covariance",
    "geometry_msgs/Pose": "geometry_msgs/Point position\ngeometry_msgs/Quaternion orientation",
    "geometry_msgs/Point": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1",
}
_AUTOWARE = {
    "autoware_perception_msgs/TrackedObject": (
        "unique_identifier_msgs/UUID object_id\nfloat32 existence_probability\n"
        "autoware_perception_msgs/ObjectClassification[] classification\n"
        "autoware_perception_msgs/TrackedObjectKinematics kinematics\nautoware_perception_msgs/Shape shape"),
    "unique_identifier_msgs/UUID": "uint8[16] uuid",
    "autoware_perception_msgs/ObjectClassification": (
        "uint8 UNKNOWN=0\nuint8 CAR=1\nuint8 TRUCK=2\nuint8 BUS=3\nuint8 TRAILER=4\nuint8 MOTORCYCLE=5\n"
        "uint8 BICYCLE=6\nuint8 PEDESTRIAN=7\nuint8 label\nfloat32 probability"),
    "autoware_perception_msgs/TrackedObjectKinematics": (
        "uint8 UNAVAILABLE=0\nuint8 SIGN_UNKNOWN=1\nuint8 AVAILABLE=2\n"
        "geometry_msgs/PoseWithCovariance pose_with_covariance\n"
        "geometry_msgs/TwistWithCovariance twist_with_covariance\n"
        "geometry_msgs/AccelWithCovariance acceleration_with_covariance\n"
        "uint8 orientation_availability\nbool is_stationary"),
    "autoware_perception_msgs/Shape": (
        "uint8 BOUNDING_BOX=0\nuint8 CYLINDER=1\nuint8 POLYGON=2\nuint8 type\n"
        "geometry_msgs/Polygon footprint\ngeometry_msgs/Vector3 dimensions"),
    "geometry_msgs/TwistWithCovariance": "geometry_msgs/Twist twist\nfloat64[36] covariance",
    "geometry_msgs/Twist": "geometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular",
    "geometry_msgs/AccelWithCovariance": "geometry_msgs/Accel accel\nfloat64[36] covariance",
    "geometry_msgs/Accel": "geometry_msgs/Vector3 linear\ngeometry_msgs/Vector3 angular",
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Polygon": "geometry_msgs/Point32[] points",
    "geometry_msgs/Point32": "float32 x\nfloat32 y\nfloat32 z",
}
_VISION = {
    "vision_msgs/Detection2D": ("std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                                "vision_msgs/BoundingBox2D bbox\nstring id"),
    "vision_msgs/ObjectHypothesisWithPose": ("vision_msgs/ObjectHypothesis hypothesis\n"
                                             "geometry_msgs/PoseWithCovariance pose"),
    "vision_msgs/ObjectHypothesis": "string class_id\nfloat64 score",
    "vision_msgs/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y",
    "vision_msgs/Pose2D": "vision_msgs/Point2D position\nfloat64 theta",
    "vision_msgs/Point2D": "float64 x\nfloat64 y",
}


def _msgdef(main: str, dependencies: dict[str, str]) -> str:
    """A ROS 2 message definition as rosbag2 / MCAP store it: the main text, then each dependency."""
    sep = "\n" + "=" * 80 + "\n"
    return main + "".join(f"{sep}MSG: {name}\n{text}" for name, text in dependencies.items())


SCHEMAS: dict[str, str] = {
    TRACKED_OBJECTS: _msgdef("std_msgs/Header header\nautoware_perception_msgs/TrackedObject[] objects",
                             {**_COMMON, **_AUTOWARE}),
    DETECTION_2D_ARRAY: _msgdef("std_msgs/Header header\nvision_msgs/Detection2D[] detections",
                                {**_COMMON, **_VISION}),
}
_ENCODERS = {name: serialize_dynamic(name, text)[name] for name, text in SCHEMAS.items()}
CLASS_LABELS = {"car": 1, "truck": 2, "cyclist": 6, "pedestrian": 7}   # ObjectClassification labels


def _header(t_ns: int, frame_id: str) -> dict[str, Any]:
    return {"stamp": {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}, "frame_id": frame_id}


def _zero_vector() -> dict[str, float]:
    return {"x": 0.0, "y": 0.0, "z": 0.0}


def tracked_objects(message: DetectionsMessage) -> bytes:
    """CDR of the frame set's TrackedObjects (objects with no position are left out)."""
    o = message.objects
    objects = []
    for i in range(len(o)):
        if not np.all(np.isfinite(o.position[i])):
            continue
        cls = message.classes[o.cls[i]]
        x, y, z = (float(v) for v in o.position[i])
        vx, vy, vz = (float(v) if math.isfinite(v) else 0.0 for v in o.velocity[i])
        length, width, height = CLASS_SIZE_M.get(cls, (1.0, 1.0, 1.0))
        objects.append({
            "object_id": {"uuid": list(int(o.track_id[i]).to_bytes(8, "little", signed=True) + bytes(8))},
            "existence_probability": float(o.score[i]),
            "classification": [{"label": CLASS_LABELS.get(cls, 0), "probability": float(o.score[i])}],
            "kinematics": {
                "pose_with_covariance": {"pose": {"position": {"x": x, "y": y, "z": z},
                                                  "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
                                         "covariance": [0.0] * 36},
                "twist_with_covariance": {"twist": {"linear": {"x": vx, "y": vy, "z": vz},
                                                    "angular": _zero_vector()}, "covariance": [0.0] * 36},
                "acceleration_with_covariance": {"accel": {"linear": _zero_vector(), "angular": _zero_vector()},
                                                 "covariance": [0.0] * 36},
                "orientation_availability": 0, "is_stationary": False},
            "shape": {"type": 0, "footprint": {"points": []},
                      "dimensions": {"x": length, "y": width, "z": height}},
        })
    return _ENCODERS[TRACKED_OBJECTS]({"header": _header(message.frame_ns, VEHICLE_FRAME), "objects": objects})


def detection_2d_arrays(message: DetectionsMessage) -> dict[str, tuple[int, bytes]]:
    """camera -> (capture time, CDR of its Detection2DArray) for every camera with a fresh frame."""
    out: dict[str, tuple[int, bytes]] = {}
    o = message.objects
    for c, camera in enumerate(message.diag.cameras):
        t_ns = int(message.diag.capture_ns[c])
        if t_ns < 0 or message.stale[c]:
            continue
        header = _header(t_ns, camera)
        detections = []
        for i in map(int, (o.camera == c).nonzero()[0]):
            x0, y0, x1, y1 = (float(v) for v in o.box[i])
            detections.append({
                "header": header,
                "results": [{"hypothesis": {"class_id": message.classes[o.cls[i]], "score": float(o.score[i])},
                             "pose": {"pose": {"position": _zero_vector(),
                                               "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}},
                                      "covariance": [0.0] * 36}}],
                "bbox": {"center": {"position": {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2}, "theta": 0.0},
                         "size_x": x1 - x0, "size_y": y1 - y0},
                "id": str(int(o.track_id[i]))})
        out[camera] = (t_ns, _ENCODERS[DETECTION_2D_ARRAY]({"header": header, "detections": detections}))
    return out


__all__ = ["CLASS_LABELS", "DETECTION_2D_ARRAY", "OBJECTS_TOPIC", "SCHEMAS", "TRACKED_OBJECTS",
           "detection_2d_arrays", "detections_2d_topic", "tracked_objects"]
