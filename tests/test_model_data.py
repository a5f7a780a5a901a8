"""Training data: targets from boxes, clip sampling (drops, stale cameras), clip-consistent augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from calib.camera import CameraModel
from calib.remap import build_remap
from perception.labels import GroundTruth, GroundTruthBox, GroundTruthObject
from perception.model.config import ModelConfig
from perception.model.dataset import (TRAIN_RULES, Augmentation, CameraSequence, ClipSampler,
                                      is_ignored, net_objects)
from perception.model.targets import (DISPLACEMENT, LOG_DEPTH, LOG_SIZE, MASK_BOX, MASK_DISPLACEMENT, OFFSET,
                                      NetBox, cell_of, render_targets)

CFG = ModelConfig(input_height=64, input_width=128, window=3, max_age_s=0.35)
CAM = CameraModel("front", 512, 256, 400.0, 400.0, 255.5, 127.5)   # pinhole, same aspect: scale 1/4, no bars
TABLE = build_remap(CAM, CFG.input_width, CFG.input_height)


def test_render_targets_centre_offset_size():
    box = np.array([30.0, 10.0, 50.0, 40.0])                      # centre (40, 25), 20 x 30 px
    t = render_targets([NetBox(2, box, 7, np.log(12.0))], None, 4, (8, 16), 8)
    (cx, cy), off = cell_of(np.array([40.0, 25.0]), 8)
    assert (cx, cy) == (5, 3) and np.allclose(off, [(40.5 / 8 - 0.5) - 5, (25.5 / 8 - 0.5) - 3])
    assert t.heatmap[2, cy, cx] == 1.0 and (t.heatmap == 1.0).sum() == 1 and t.heatmap[[0, 1, 3]].max() == 0
    np.testing.assert_allclose(t.regression[OFFSET, cy, cx], off, atol=1e-6)
    np.testing.assert_allclose(t.regression[LOG_SIZE, cy, cx], np.log([20 / 8, 30 / 8]), atol=1e-6)
    np.testing.assert_allclose(t.regression[LOG_DEPTH, cy, cx], np.log(12.0), atol=1e-6)
    assert t.masks[MASK_BOX].sum() == 1 and t.masks[MASK_DISPLACEMENT].sum() == 0   # no history: no velocity
    moved = render_targets([NetBox(2, box, 7)], {7: np.array([36.0, 25.0])}, 4, (8, 16), 8)
    np.testing.assert_allclose(moved.regression[DISPLACEMENT, cy, cx], [0.5, 0.0])   # 4 px = half a cell
    assert moved.masks[MASK_DISPLACEMENT, cy, cx] == 1


def test_ignored_boxes_are_neither_positive_nor_negative():
    t = render_targets([NetBox(0, np.array([30.0, 10.0, 50.0, 40.0]), 1, ignore=True)], None, 4, (8, 16), 8)
    assert t.heatmap.max() == 0 and t.masks.sum() == 0
    assert t.heatmap_weight[3, 5] == 0 and t.heatmap_weight[0, 0] == 1


def gt(t_ns: int, boxes: list[tuple[int, str, tuple, float]], ranges: dict[int, float]) -> GroundTruth:
    return GroundTruth("front", t_ns,
                       tuple(GroundTruthBox(i, c, b, 0.0, occ) for i, c, b, occ in boxes),
                       # CAM has identity extrinsics: vehicle z = the optical axis, so these sit r metres deep
                       tuple(GroundTruthObject(i, "car", (0.0, 0.0, r), (0, 0, 0), (4, 2, 1.5), 0.0)
                             for i, r in ranges.items()), 10.0)


def test_label_rules():
    frame = gt(0, [(1, "car", (100, 100, 200, 180), 0.0),       # 20 net px tall: kept everywhere
                   (2, "car", (300, 100, 330, 132), 0.0),        # 8 net px: training yes, evaluation no
                   (3, "pedestrian", (400, 60, 420, 160), 0.6),  # occluded 60 %
                   (4, "car", (-400, 100, -300, 180), 0.0)], {1: 20.0})
    assert is_ignored(frame.boxes, TABLE, TRAIN_RULES).tolist() == [False, False, False, True]
    objs = net_objects(frame, TABLE, CFG.classes, CFG.depth_focal_px)
    np.testing.assert_allclose(objs[0].box, [25 - 0.375, 25 - 0.375, 50 - 0.375, 45 - 0.375], atol=1e-6)
    focal = CFG.depth_focal_px / TABLE.net_camera.fx          # 400 / 100: depth normalised to focal length F
    assert objs[0].log_depth == pytest.approx(np.log(20.0 * focal)) and np.isnan(objs[1].log_depth)


def moving_sequence(n: int = 12, fps: float = 10.0, step: int = 40) -> CameraSequence:
    """A bright box moving right by `step` source px per frame (step/4 net px) over a dark image."""
    images = np.full((n, CFG.input_height, CFG.input_width, 3), 40, np.uint8)
    labels = []
    for i in range(n):
        x0 = 40 + step * i
        images[i, 20:40, (x0 // 4):(x0 // 4) + 10] = 220
        labels.append(gt(int(i * 1e9 / fps), [(5, "car", (x0 - 0.5, 80 - 0.5, x0 + 39.5, 160 - 0.5), 0.0)], {5: 15.0}))
    seq = CameraSequence("mem", "front", TABLE, images, (np.arange(n) * 1e9 / fps).astype(np.int64), labels)
    seq.objects = [net_objects(g, TABLE, CFG.classes, CFG.depth_focal_px) for g in labels]
    return seq


def peak_displacement(batch, step: int) -> np.ndarray:
    c, y, x = np.argwhere(batch.heatmap[step] == 1.0)[0]
    return batch.regression[step, DISPLACEMENT, y, x] * CFG.stride


def test_clip_without_augmentation_follows_the_drive():
    sampler = ClipSampler([moving_sequence()], CFG, 4, Augmentation.none())
    clip = sampler.clip(np.random.default_rng(0))
    np.testing.assert_allclose(clip.dt, [0.0, 0.1, 0.1, 0.1], atol=1e-6)
    assert clip.fresh.tolist() == [1, 1, 1, 1]
    assert clip.masks[0, MASK_DISPLACEMENT].sum() == 0                  # first step: no history
    for step in (1, 2, 3):
        np.testing.assert_allclose(peak_displacement(clip, step), [10.0, 0.0], atol=1e-6)


def test_flip_negates_velocity_and_zoom_scales_it_and_the_range():
    seq = moving_sequence()
    flipped = ClipSampler([seq], CFG, 3, Augmentation(flip_p=1.0, zoom=(1.0, 1.0), brightness=0, contrast=0,
                                                      saturation=0, noise_std=0, drop_p=0, stale_p=0))
    clip = flipped.clip(np.random.default_rng(0))
    np.testing.assert_allclose(peak_displacement(clip, 2), [-10.0, 0.0], atol=1e-6)
    zoomed = ClipSampler([seq], CFG, 3, Augmentation(flip_p=0.0, zoom=(1.25, 1.25), brightness=0, contrast=0,
                                                     saturation=0, noise_std=0, drop_p=0, stale_p=0))
    clip = zoomed.clip(np.random.default_rng(0))
    np.testing.assert_allclose(peak_displacement(clip, 2), [12.5, 0.0], atol=1e-5)
    c, y, x = np.argwhere(clip.heatmap[2] == 1.0)[0]
    focal = CFG.depth_focal_px / TABLE.net_camera.fx
    assert clip.regression[2, LOG_DEPTH, y, x] == pytest.approx(np.log(15.0 * focal / 1.25), abs=1e-6)


def test_dropped_frames_and_stale_steps():
    seq = moving_sequence(30, step=12)
    sampler = ClipSampler([seq], CFG, 6, Augmentation(0.0, (1.0, 1.0), 0, 0, 0, 0, drop_p=0.5, stale_p=0.4))
    rng = np.random.default_rng(4)
    seen_drop = seen_stale = False
    for _ in range(10):
        clip = sampler.clip(rng)
        assert clip.fresh[0] == 1 and set(np.round(clip.dt[1:].astype(float), 6).tolist()) <= {0.1, 0.2}
        last_fresh, age = None, 0.0
        for step in range(6):
            age += clip.dt[step]
            if not clip.fresh[step]:
                seen_stale = True
                assert clip.masks[step].sum() == 0 and clip.heatmap_weight[step].sum() == 0   # not supervised
                continue
            if last_fresh is not None and age <= CFG.max_age_s:
                # displacement since the newest *stored* frame: 3 net px per 0.1 s, over the real gap
                np.testing.assert_allclose(peak_displacement(clip, step), [30.0 * age, 0.0], atol=1e-4)
                seen_drop |= age > 0.15
            last_fresh, age = step, 0.0
    assert seen_drop and seen_stale


def test_clip_images_are_the_normalised_frames():
    seq = moving_sequence()
    clip = ClipSampler([seq], CFG, 3, Augmentation.none()).clip(np.random.default_rng(1))
    expected_dark = (40 / 255 - np.array(CFG.mean)) / np.array(CFG.std)
    np.testing.assert_allclose(clip.images[0, :, 60, 5], expected_dark, atol=1e-5)


def test_real_drive_sequences(tmp_path):
    from tests.test_model import tiny_drive
    from perception.model.dataset import load_sequences

    seqs = load_sequences(tiny_drive(), CFG, cache_dir=tmp_path)
    again = load_sequences(tiny_drive(), CFG, cache_dir=tmp_path)        # from the cache
    assert [s.camera for s in seqs] == ["front", "front_left"]
    for a, b in zip(seqs, again):
        assert a.images.shape == (len(a), CFG.input_height, CFG.input_width, 3) and a.images.dtype == np.uint8
        np.testing.assert_array_equal(a.images, b.images)
        assert [g.t_ns for g in a.labels] == a.t_ns.tolist()
    assert sum(not o.ignore for s in seqs for objs in s.objects for o in objs) > 10
