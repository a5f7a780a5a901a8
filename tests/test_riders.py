"""A rider and its two-wheeler as one cyclist (perception/decode/riders.py), alone and through a real ONNX
'decoded' detector whose card asks for it (ONNX Runtime, the plug-in decoder)."""

from __future__ import annotations

import numpy as np
import pytest

from calib.remap import build_remap
from perception.decode import DecodeConfig
from perception.decode.riders import merge_riders, rides
from perception.decode.yolox import DetectorDecoder
from perception.detections import Detections
from perception.engine.onnxruntime import open_detector
from perception.io.drive_common import default_camera
from perception.labels import CLASS_INDEX, CLASSES
from tests.test_yolox_decode import decoded_model, write_card

PED, CYC, CAR = CLASS_INDEX["pedestrian"], CLASS_INDEX["cyclist"], CLASS_INDEX["car"]


def dets(rows) -> Detections:
    """rows: (camera, class, score, x0, y0, x1, y1)."""
    a = np.asarray(rows, np.float64).reshape(-1, 7)
    n = len(a)
    return Detections(a[:, 0].astype(np.int32), a[:, 1].astype(np.int32), a[:, 2].astype(np.float32),
                      a[:, 3:].astype(np.float32), np.full(n, np.nan, np.float32), np.full((n, 2), np.nan, np.float32))


BIKE = (100, 150, 200, 220)   # side view, 100 x 70 px


def test_a_rider_over_a_bicycle_becomes_one_cyclist_box():
    out = merge_riders(dets([(0, PED, 0.9, 130, 80, 170, 200), (0, CYC, 0.6, *BIKE)]), PED, CYC)
    assert len(out) == 1 and out.cls[0] == CYC
    np.testing.assert_allclose(out.box[0], [100, 80, 200, 220])
    assert out.score[0] == pytest.approx(0.9)


@pytest.mark.parametrize(("person", "why"), [
    ((210, 90, 250, 220), "walks beside it: centre right of the bicycle"),
    ((130, 160, 170, 215), "its top is below the bicycle's top (a child in front of it)"),
    ((130, 60, 170, 165), "its feet end above the pedals (a person behind, far up the image)"),
])
def test_a_person_not_riding_stays_a_pedestrian(person, why):
    out = merge_riders(dets([(0, PED, 0.9, *person), (0, CYC, 0.6, *BIKE)]), PED, CYC)
    assert sorted(out.cls.tolist()) == sorted([PED, CYC]), why
    assert not rides(np.array([person], float), np.array([BIKE], float))[0, 0]


def test_a_weak_two_wheeler_under_a_walker_takes_no_rider():
    # vtest.avi: a 0.14 "bicycle" in a walking man's legs
    out = merge_riders(dets([(0, PED, 0.66, 392, 179, 418, 260), (0, CYC, 0.14, 390, 196, 421, 264)]), PED, CYC)
    assert out.cls.tolist() == [PED, CYC]
    assert out.score.tolist() == pytest.approx([0.66, 0.14])


def test_each_bicycle_takes_one_rider_and_cameras_do_not_mix():
    rows = [(0, PED, 0.8, 130, 80, 170, 200),      # rides bike 0 (covers most of it)
            (0, PED, 0.7, 140, 100, 160, 190),     # also over bike 0, but the first covers more: stays
            (0, CYC, 0.6, *BIKE),
            (1, CYC, 0.5, *BIKE),                  # same pixels, other camera: no rider there
            (1, CAR, 0.95, 0, 0, 50, 50)]
    out = merge_riders(dets(rows), PED, CYC)
    assert len(out) == 4
    assert list(out.score) == sorted(out.score, reverse=True)          # best first, as NMS leaves them
    merged = (out.camera == 0) & (out.cls == CYC)
    np.testing.assert_allclose(out.box[merged][0], [100, 80, 200, 220])
    assert ((out.camera == 0) & (out.cls == PED)).sum() == 1 and ((out.camera == 1) & (out.cls == CYC)).sum() == 1


def test_no_two_wheelers_leaves_the_detections_as_they_are():
    d = dets([(0, PED, 0.9, 130, 80, 170, 200), (0, CAR, 0.8, 0, 0, 50, 50)])
    out = merge_riders(d, PED, CYC)
    np.testing.assert_array_equal(out.box, d.box)
    np.testing.assert_array_equal(out.cls, d.cls)


@pytest.mark.parametrize("merge", [True, False])
def test_the_card_switches_the_merge_in_the_plug_in_decoder(tmp_path, merge):
    # network 64x64 = source 64x64 (square: no letterbox); model classes 0 person, 1 bicycle
    boxes = [[26, 8, 38, 40], [20, 24, 44, 46]]
    model = decoded_model(tmp_path / "riders.onnx", boxes, [0.9, 0.7], [0, 1])
    write_card(model, class_map={0: "pedestrian", 1: "cyclist"}, merge_riders=merge)
    engine = open_detector(model)
    assert engine.contract.merge_riders is merge
    outputs, _ = engine.run(np.zeros((1, 3, 64, 64), np.float32), np.array([0]), engine.initial_state(1))
    table = build_remap(default_camera("c", 64, 64), 64, 64, "letterbox")
    out = DetectorDecoder(engine.contract, [table], DecodeConfig.for_classes(CLASSES, 0.3))(outputs)
    if merge:
        assert out.cls.tolist() == [CYC]
        np.testing.assert_allclose(out.box[0], [19.5, 7.5, 43.5, 45.5], atol=1e-4)   # the union, centres at integers
    else:
        assert sorted(out.cls.tolist()) == sorted([PED, CYC])
