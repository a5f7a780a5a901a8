"""The ground-truth schema's automatic-label additions: round trip through a real drive, old files still read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calib.rig import Rig
from perception.errors import DriveError
from perception.frame import Frame
from perception.io.drive import DriveReader, DriveWriter
from perception.io.drive_common import default_camera
from perception.labels import AutoLabel, GroundTruth, GroundTruthBox


def test_auto_labels_round_trip_through_a_drive(tmp_path: Path) -> None:
    rig = Rig([default_camera("cam", 64, 48)])
    boxes = (GroundTruthBox(3, "car", (1.0, 2.0, 30.5, 40.0), 0.0, 0.0, AutoLabel("yolox-1", 0.81, 0.7, "teacher")),
             GroundTruthBox(4, "pedestrian", (40.0, 5.0, 50.0, 30.0), 0.0, 0.0,
                            AutoLabel("yolox-1", 0.35, 0.6, "interpolated")),
             GroundTruthBox(5, "truck", (0.0, 0.0, 9.0, 9.0), 0.1, 0.2))  # an exact label beside them
    gt = GroundTruth("cam", 1000, boxes, (), None)
    with DriveWriter(tmp_path / "d.mcap", rig, jpeg_quality=90) as w:
        w.write_frame("cam", 1000, Frame.from_bgr(np.zeros((48, 64, 3), np.uint8)))
        w.write_ground_truth(gt)
    with DriveReader(tmp_path / "d.mcap") as r:
        (back,) = r.ground_truth()
        (raw,) = r.messages(["/camera/cam/ground_truth"])
    assert back == gt
    assert "ego" not in raw.value and "auto" not in raw.value["boxes"][2]
    assert raw.value["boxes"][0]["auto"] == {"teacher": "yolox-1", "score": 0.81, "track_score": 0.7,
                                             "origin": "teacher"}


def test_labels_without_auto_read_as_before() -> None:
    old = {"camera": "c", "t_ns": 5, "boxes": [{"id": 1, "cls": "car", "box": [0, 0, 2, 2], "truncation": 0,
                                                "occlusion": 0}], "objects": [], "ego": {"speed": 3.5}}
    gt = GroundTruth.from_dict(json.loads(json.dumps(old)), "old")
    assert gt.boxes[0].auto is None and gt.ego_speed == 3.5
    assert gt.to_dict() == {**old, "boxes": [{**old["boxes"][0], "box": [0.0, 0.0, 2.0, 2.0]}]}


@pytest.mark.parametrize("auto, message", [
    ({"teacher": "t", "score": 1.5, "track_score": 0.5, "origin": "teacher"}, "in \\[0, 1\\]"),
    ({"teacher": "t", "score": 0.5, "track_score": 0.5, "origin": "guessed"}, "origin 'guessed'"),
    ({"teacher": 7, "score": 0.5, "track_score": 0.5, "origin": "teacher"}, "teacher must be a string"),
    ({"score": 0.5, "track_score": 0.5, "origin": "teacher"}, "missing key 'teacher'"),
])
def test_bad_auto_labels_are_named(auto: dict, message: str) -> None:
    d = {"camera": "c", "t_ns": 5, "boxes": [{"id": 1, "cls": "car", "box": [0, 0, 2, 2], "truncation": 0,
                                              "occlusion": 0, "auto": auto}], "objects": []}
    with pytest.raises(DriveError, match=message):
        GroundTruth.from_dict(d, "f.mcap /camera/c/ground_truth")
