"""Decoding: peaks, the geometry back to original camera pixels (letterbox + lens), velocity, NMS, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from calib.defaults import default_rig
from calib.remap import build_remap
from perception.decode import DecodeConfig, Decoder, find_peaks
from perception.detections import Detections
from perception.engine.base import Heads
from perception.errors import ConfigError
from perception.labels import CLASSES
from perception.model.config import ModelConfig
from perception.model.targets import (DISPLACEMENT, LOG_DEPTH, LOG_SIZE, OFFSET, NetBox, render_targets,
                                      source_boxes_to_net)

CFG = ModelConfig()
CONTRACT = CFG.contract("test", "0" * 64)
H, W = CFG.feature_height, CFG.feature_width


@pytest.fixture(scope="module")
def tables():
    return [build_remap(cam, CFG.input_width, CFG.input_height) for cam in default_rig(4).cameras]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def heads_from_targets(per_camera: list, gap_s: float) -> Heads:
    """Perfect network outputs: the rendered targets themselves."""
    n = len(per_camera)
    hm = np.stack([t.heatmap for t in per_camera])
    reg = np.stack([t.regression for t in per_camera])
    return Heads(hm, (np.exp(reg[:, LOG_SIZE]) * CFG.stride).astype(np.float32), reg[:, OFFSET],
                 (reg[:, DISPLACEMENT] * CFG.stride / gap_s).astype(np.float32), reg[:, LOG_DEPTH],
                 np.ones(n, np.float32))


def test_peaks_equal_max_pool_reference():
    rng = np.random.default_rng(0)
    hm = rng.random((3, 4, H, W)).astype(np.float32)
    hm[1, 1, 5, 5] = hm[1, 1, 5, 6] = 0.999            # a plateau: both are maxima of their 3x3 window
    hm[0, 2, -1, :] = 0.98                            # bottom row of one plane, top row of the next: no
    hm[0, 3, 0, :] = 0.97                             # window of one plane reaches into another
    thr = np.array([0.9, 0.5, 0.95, 0.99], np.float32)
    padded = np.pad(hm, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    pooled = sliding_window_view(padded, (3, 3), axis=(2, 3)).max(axis=(-1, -2))
    want = set(zip(*np.nonzero((hm == pooled) & (hm >= thr[:, None, None]))))
    camera, cls, row, col, score = find_peaks(hm, thr, max_peaks=10_000)
    assert set(zip(camera, cls, row, col)) == want and len(want) > 60
    assert np.all(np.diff(camera) >= 0)
    for n in range(3):
        assert np.all(np.diff(score[camera == n]) <= 0)
    top = find_peaks(hm, thr, max_peaks=5)
    assert top[0].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    for n in range(3):
        np.testing.assert_array_equal(top[4][top[0] == n], score[camera == n][:5])


@pytest.mark.parametrize("camera", [0, 1, 3])   # front (mild), front_left (wide, strong barrel), rear (rational)
def test_perfect_heads_decode_to_the_source_boxes(tables, camera):
    """Objects placed in 3-D, imaged through the real lens model: boxes, classes, range and image velocity
    come back from heads rendered from their labels."""
    table = tables[camera]
    src = table.source_camera
    cam_to_vehicle = src.T_vehicle_camera
    # object centres in the camera frame (x right, y down, z forward, m) and their extents in pixels
    centres_cam = np.array([[-2.0, 0.5, 18.0], [3.0, 0.4, 9.0], [-2.0, 0.6, 7.0]])
    half = np.array([[60.0, 45.0], [12.0, 40.0], [130.0, 110.0]])
    classes = [0, 2, 1]
    centres_vehicle = centres_cam @ cam_to_vehicle[:3, :3].T + cam_to_vehicle[:3, 3]
    uv, ok = src.project(centres_vehicle)
    assert ok.all()
    boxes = np.concatenate([uv - half, uv + half], 1)
    moved = boxes + np.array([40.0, -10.0, 40.0, -10.0])             # where they were 0.1 s earlier
    focal = CFG.depth_focal_px / table.net_camera.fx       # the depth head is normalised to focal length F
    net_now, net_prev = source_boxes_to_net(boxes, table), source_boxes_to_net(moved, table)
    objs = [NetBox(c, b, i, float(np.log(z * focal))) for i, (c, b, z) in enumerate(zip(classes, net_now, centres_cam[:, 2]))]
    prev = {i: (b[:2] + b[2:]) / 2 for i, b in enumerate(net_prev)}
    targets = render_targets(objs, prev, len(CLASSES), (H, W), CFG.stride)
    decoder = Decoder(CONTRACT, [table], DecodeConfig.for_classes(CLASSES, 0.5))
    dets = decoder(heads_from_targets([targets], gap_s=0.1))
    assert len(dets) == 3
    for det_i in range(3):
        k = int(np.argmax([iou(dets.box[det_i], b) for b in boxes]))
        assert iou(dets.box[det_i], boxes[k]) > 0.9, (dets.box[det_i], boxes[k])
        assert dets.cls[det_i] == classes[k]
        # range from the vehicle origin; the box centre's ray passes within a pixel or so of the 3-D centre
        assert dets.range_m[det_i] == pytest.approx(np.hypot(*centres_vehicle[k, :2]), rel=0.01)
        # centre moved from `moved` to `boxes` in 0.1 s: (-40, +10) px / 0.1 s in source pixels
        np.testing.assert_allclose(dets.image_velocity[det_i], [-400.0, 100.0], rtol=0.1, atol=20.0)


def test_boxes_are_clipped_to_the_image_edges(tables):
    table = tables[0]
    hm = np.zeros((1, 4, H, W), np.float32)
    hm[0, 0, 0, 1] = 0.9                    # a 40-px box centred in the top-left corner cell: sticks out
    heads = Heads(hm, np.full((1, 2, H, W), 40.0, np.float32), np.zeros((1, 2, H, W), np.float32),
                  np.zeros((1, 2, H, W), np.float32), np.zeros((1, 1, H, W), np.float32), np.zeros(1, np.float32))
    dets = Decoder(CONTRACT, [table], DecodeConfig.for_classes(CLASSES, 0.5))(heads)
    assert len(dets) == 1
    x0, y0, x1, y1 = dets.box[0]
    # the top edge is clipped to the network image's top edge (row 2 - 0.5 below the letterbox bar), which
    # the lens maps a little inside the source image
    centre_x = (1 + 0.5) * CFG.stride - 0.5
    top = table.net_to_source(np.array([[centre_x, 1.5]]))[0, 1]
    assert y0 == pytest.approx(top, abs=1e-3) and -0.5 <= y0 < 20
    assert -0.5 <= x0 < x1 <= table.source_camera.width - 0.5 and y1 > y0
    assert np.isnan(dets.image_velocity).all()                          # no history -> unknown velocity


def peak_heads(n_cams: int, peaks: list[tuple[int, int, int, int, float, float]]) -> Heads:
    """(camera, cls, row, col, score, size) peaks on empty heads."""
    hm = np.zeros((n_cams, 4, H, W), np.float32)
    size = np.zeros((n_cams, 2, H, W), np.float32)
    for cam, c, r, col, s, sz in peaks:
        hm[cam, c, r, col] = s
        size[cam, :, r, col] = sz
    z = np.zeros((n_cams, 2, H, W), np.float32)
    return Heads(hm, size, z, z, np.zeros((n_cams, 1, H, W), np.float32), np.ones(n_cams, np.float32))


def test_classwise_nms_per_camera(tables):
    decoder = Decoder(CONTRACT, tables[:2], DecodeConfig.for_classes(CLASSES, 0.3, nms_iou=0.5))
    heads = peak_heads(2, [(0, 0, 10, 20, 0.9, 80.0), (0, 0, 10, 22, 0.8, 80.0),   # overlap, same class
                           (0, 2, 10, 21, 0.7, 80.0),                               # overlap, other class
                           (1, 0, 10, 22, 0.6, 80.0)])                              # other camera
    dets = decoder(heads)
    got = sorted(zip(dets.camera.tolist(), dets.cls.tolist(), np.round(dets.score.astype(float), 3).tolist()))
    assert got == [(0, 0, 0.9), (0, 2, 0.7), (1, 0, 0.6)]
    assert np.all(np.diff(dets.score) <= 0)


def test_per_class_thresholds_and_stale_cameras(tables):
    cfg = DecodeConfig.for_classes(CLASSES, {"car": 0.3, "pedestrian": 0.5})
    assert cfg.score_thresholds == (0.3, 0.3, 0.5, 0.3)
    decoder = Decoder(CONTRACT, tables[:2], cfg)
    heads = peak_heads(2, [(0, 0, 5, 5, 0.4, 30.0), (0, 2, 20, 40, 0.4, 30.0), (1, 0, 5, 5, 0.9, 30.0)])
    dets = decoder(heads)
    assert sorted(zip(dets.camera.tolist(), dets.cls.tolist())) == [(0, 0), (1, 0)]
    dets = decoder(heads, fresh=np.array([True, False]))
    assert dets.camera.tolist() == [0]


def test_config_errors_are_named(tables):
    with pytest.raises(ConfigError, match=r"unknown classes \['bus'\]"):
        DecodeConfig.for_classes(CLASSES, {"bus": 0.3})
    with pytest.raises(ConfigError, match="score thresholds must be in"):
        DecodeConfig((0.0, 0.3, 0.3, 0.3))
    with pytest.raises(ConfigError, match="3 score thresholds for 4 classes"):
        Decoder(CONTRACT, tables, DecodeConfig((0.3, 0.3, 0.3)))
    small = build_remap(tables[0].source_camera, 224, 128)
    with pytest.raises(ConfigError, match="remap table is for a 224x128 input, the model takes 448x256"):
        Decoder(CONTRACT, [small], DecodeConfig.for_classes(CLASSES))
    with pytest.raises(ConfigError, match="heads for 1 cameras, 4 remap tables"):
        Decoder(CONTRACT, tables, DecodeConfig.for_classes(CLASSES))(peak_heads(1, []))


def test_empty_heads_give_empty_detections(tables):
    dets = Decoder(CONTRACT, tables, DecodeConfig.for_classes(CLASSES))(peak_heads(4, []))
    assert len(dets) == 0 and dets.box.shape == (0, 4)


@pytest.mark.parametrize("max_per_camera", [1000, 7])  # 7: fewer than the peaks of every camera
def test_cameras_decode_together_as_each_alone(tables, max_per_camera):
    """All cameras of a set in one call (one dilation, one lens mapping per camera, one NMS) give exactly
    what each camera decoded on its own gives."""
    rng = np.random.default_rng(3)
    n = len(tables)
    hm = np.where(rng.random((n, 4, H, W)) < 0.01, rng.uniform(0.3, 1.0, (n, 4, H, W)), 0.0).astype(np.float32)
    heads = Heads(hm, rng.uniform(5.0, 40.0, (n, 2, H, W)).astype(np.float32),
                  rng.random((n, 2, H, W)).astype(np.float32), rng.normal(0, 50, (n, 2, H, W)).astype(np.float32),
                  rng.normal(2.5, 0.5, (n, 1, H, W)).astype(np.float32), np.array([1, 0, 1, 1], np.float32))
    cfg = DecodeConfig.for_classes(CLASSES, 0.4, max_per_camera=max_per_camera)
    fresh = np.array([True, True, False, True])
    got = Decoder(CONTRACT, tables, cfg)(heads, fresh)
    alone = []
    for c in np.flatnonzero(fresh).tolist():
        one = Heads(*(getattr(heads, f)[c:c + 1] for f in ("heatmap", "size", "offset", "velocity", "log_depth",
                                                           "velocity_valid")))
        dets = Decoder(CONTRACT, [tables[c]], cfg)(one)
        dets.camera[:] = c
        alone.append(dets)
    want = Detections.concatenate(alone)
    want = want.select(np.argsort(-want.score, kind="stable"))
    assert len(got) >= 3 * min(max_per_camera, 50) and set(got.camera.tolist()) == {0, 1, 3}
    assert np.isnan(got.image_velocity[got.camera == 1]).all() and np.isfinite(got.image_velocity[got.camera == 0]).all()
    for name in ("camera", "cls", "score", "box", "range_m", "image_velocity"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
