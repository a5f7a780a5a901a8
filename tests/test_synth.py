"""`perception synth` / replay.synth: drives written through DriveWriter, read back with DriveReader, and
their ground truth checked against the geometry."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from calib.defaults import default_rig
from calib.rig import Rig, save_rig
from perception.cli import main
from perception.errors import ConfigError
from perception.io.drive import DriveReader
from perception.io.drive_images import frame_to_bgr
from replay.synth import SynthConfig, cached_drive, generate_drive
from replay.synth.scenarios import SCENARIOS
from replay.synth.sensor import Sensor

SMALL = dict(width=320, height=180)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "mixed.mcap"
    summary = generate_drive(path, seed=3, seconds=1.0, fps=10, num_cameras=3, scenario="mixed", **SMALL)
    return path, summary


def read_all(path):
    with DriveReader(path) as r:
        frames = defaultdict(list)
        for cf in r.frames():
            frames[cf.camera].append(cf)
        gts = {c: list(r.ground_truth(c)) for c in r.cameras}
        return r.rig, frames, gts, list(r.ego())


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    params = dict(seconds=0.3, fps=10, num_cameras=2, scenario="mixed", width=160, height=90)
    a, b, c = tmp_path / "a.mcap", tmp_path / "b.mcap", tmp_path / "c.mcap"
    generate_drive(a, seed=11, **params)
    generate_drive(b, seed=11, **params)
    generate_drive(c, seed=12, **params)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_drive_reads_back_with_one_label_per_frame(mixed):
    path, summary = mixed
    rig, frames, gts, ego = read_all(path)
    assert rig.names == ("front", "front_left", "front_right") == summary.cameras
    for camera in rig.names:
        assert len(frames[camera]) == summary.frames[camera] == 10
        assert [g.t_ns for g in gts[camera]] == [cf.t_ns for cf in frames[camera]]
        assert all((cf.frame.width, cf.frame.height) == (320, 180) for cf in frames[camera])
        assert all(g.camera == camera for g in gts[camera])
        assert np.diff([cf.t_ns for cf in frames[camera]]).tolist() == [100_000_000] * 9
    assert len(ego) == 10 and all(11.0 <= e.speed <= 16.0 for e in ego)
    assert summary.file_size == path.stat().st_size
    boxes = defaultdict(int)
    for camera in rig.names:
        for g in gts[camera]:
            for b in g.boxes:
                boxes[b.cls] += 1
    assert dict(boxes) == {k: v for k, v in summary.boxes.items() if v}
    assert summary.boxes["car"] > 0 and summary.boxes["pedestrian"] > 0


def test_labels_are_consistent(mixed):
    rig, _, gts, _ = read_all(mixed[0])
    for camera in rig.names:
        w, h = rig[camera].width, rig[camera].height
        for g in gts[camera]:
            objects = {o.id: o for o in g.objects}
            assert all(o.range <= 150.0 for o in g.objects)
            for b in g.boxes:
                assert objects[b.id].cls == b.cls
                x0, y0, x1, y1 = b.box
                assert -0.5 <= x0 < x1 <= w - 0.5 and -0.5 <= y0 < y1 <= h - 0.5
                assert 0.0 <= b.truncation <= 1.0 and 0.0 <= b.occlusion < 1.0


def corners_vehicle(o) -> np.ndarray:
    l, w, h = o.size
    c, s = math.cos(o.yaw), math.sin(o.yaw)
    local = np.array([[sx * l / 2, sy * w / 2, sz * h / 2] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    rotated = np.column_stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]])
    return rotated + o.position


def test_fully_visible_objects_have_their_centre_in_their_box_and_hidden_ones_no_box(mixed):
    rig, _, gts, _ = read_all(mixed[0])
    checked = behind = 0
    for camera in rig.names:
        model = rig[camera]
        for g in gts[camera]:
            boxes = {b.id: b for b in g.boxes}
            for o in g.objects:
                corners_cam = (corners_vehicle(o) - model.position) @ model.R_vehicle_camera
                if (corners_cam[:, 2] < 0).all():
                    assert o.id not in boxes              # wholly behind this camera
                    behind += 1
                b = boxes.get(o.id)
                if b is not None and b.truncation == 0.0 and b.occlusion == 0.0:
                    (u, v), = model.project(np.array([o.position]))[0]
                    x0, y0, x1, y1 = b.box
                    assert x0 <= u <= x1 and y0 <= v <= y1, (camera, g.t_ns, o.id)
                    checked += 1
    assert checked > 20 and behind > 20


def test_relative_velocities_match_finite_differences(mixed):
    _, _, gts, _ = read_all(mixed[0])
    track = defaultdict(list)
    for g in gts["front"]:
        for o in g.objects:
            track[o.id].append((g.t_ns / 1e9, np.array(o.position), np.array(o.velocity)))
    compared = 0
    for samples in track.values():
        for (t0, p0, v0), (t1, p1, v1) in zip(samples, samples[1:]):
            # positions are piecewise quadratic in time, so the mean velocity is the secant's slope
            assert (p1 - p0) / (t1 - t0) == pytest.approx((v0 + v1) / 2, abs=0.05)
            compared += 1
    assert compared > 100


def test_lead_brake_lead_decelerates_in_the_front_camera(tmp_path):
    path = tmp_path / "brake.mcap"
    generate_drive(path, seed=4, seconds=2.0, fps=10, num_cameras=1, scenario="lead_brake", **SMALL)
    _, _, gts, ego = read_all(path)
    lead = [(next(o for o in g.objects if o.id == 1), next(b for b in g.boxes if b.id == 1)) for g in gts["front"]]
    closing = [o.velocity[0] for o, _ in lead]
    assert closing[0] == pytest.approx(0.0, abs=1e-6) and closing[-1] < -5.0   # lead slows, ego does not yet
    assert all(np.diff(closing) <= 1e-9)
    widths = [b.box[2] - b.box[0] for _, b in lead]
    assert widths[-1] > 1.2 * widths[0]                                         # it looms in the image
    assert all(b.occlusion == 0.0 and b.truncation == 0.0 for _, b in lead)


def test_dropped_frames_leave_gaps_in_the_timeline(tmp_path):
    path = tmp_path / "drops.mcap"
    summary = generate_drive(path, seed=2, seconds=2.0, fps=10, num_cameras=2, drop_prob=0.3, width=160, height=90)
    _, frames, gts, ego = read_all(path)
    start = min(cf.t_ns for f in frames.values() for cf in f)
    grid = {e.t_ns for e in ego}
    assert len(grid) == 20
    for camera, cfs in frames.items():
        assert summary.frames[camera] + summary.dropped[camera] == 20
        assert len(cfs) == summary.frames[camera] == len(gts[camera])
        assert {cf.t_ns for cf in cfs} <= grid
    assert sum(summary.dropped.values()) >= 5
    assert start >= min(grid)


def test_timestamp_jitter_is_bounded(tmp_path):
    path = tmp_path / "jitter.mcap"
    generate_drive(path, seed=5, seconds=1.0, fps=10, num_cameras=3, jitter_ms=20.0, width=160, height=90)
    _, frames, _, ego = read_all(path)
    ticks = np.array(sorted(e.t_ns for e in ego))
    offsets = []
    for cfs in frames.values():
        t = np.array([cf.t_ns for cf in cfs])
        assert (np.diff(t) > 0).all()
        offsets.extend(t - ticks)
    offsets = np.abs(offsets)
    assert offsets.max() <= 20_000_000 and offsets.mean() > 2_000_000


@pytest.mark.parametrize("image_format", ["nv12", "bgr8"])
def test_raw_formats_carry_the_same_images(tmp_path, image_format):
    params = dict(seed=6, seconds=0.2, fps=10, num_cameras=1, width=160, height=90)
    generate_drive(tmp_path / "jpeg.mcap", image_format="jpeg", jpeg_quality=95, **params)
    generate_drive(tmp_path / "raw.mcap", image_format=image_format, **params)
    _, jpeg, _, _ = read_all(tmp_path / "jpeg.mcap")
    _, raw, _, _ = read_all(tmp_path / "raw.mcap")
    for a, b in zip(jpeg["front"], raw["front"]):
        assert b.frame.pixel_format.value == image_format
        diff = np.abs(frame_to_bgr(a.frame).astype(int) - frame_to_bgr(b.frame).astype(int))
        assert diff.mean() < 3.0


def test_lighting_dims_towards_dusk():
    world = SCENARIOS["mixed"](np.random.default_rng(0), 10.0)
    gains = [np.mean(world.lighting.gain(t)) for t in (0.0, 5.0, 10.0)]
    assert gains[0] > gains[1] > gains[2]
    sensor = Sensor(64, 48, np.random.default_rng(1))
    flat = np.full((48, 64, 3), 160, np.uint8)
    bright = sensor.expose(flat, world.lighting.gain(0.0), np.random.default_rng(2))
    dim = sensor.expose(flat, world.lighting.gain(10.0), np.random.default_rng(2))
    assert bright.mean() == pytest.approx(160 * gains[0], abs=1.0)
    assert dim.mean() == pytest.approx(160 * gains[2], abs=1.0)
    assert 0.5 < bright.astype(float).std() < 5.0                 # read noise, a few grey levels


def test_cached_drive_generates_once_per_parameter_set(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_CACHE_DIR", str(tmp_path))
    params = dict(seed=1, seconds=0.2, fps=10, num_cameras=1, width=160, height=90)
    first = cached_drive(**params)
    assert first.parent == tmp_path / "drives" and first.exists()
    stamp = first.stat().st_mtime_ns
    assert cached_drive(**params) == first and first.stat().st_mtime_ns == stamp
    other = cached_drive(**{**params, "seed": 2})
    assert other != first and other.exists()
    assert sorted(p.name for p in (tmp_path / "drives").iterdir()) == sorted([first.name, other.name])


def test_cli_writes_a_drive_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "cli.mcap"
    assert main(["synth", "--out", str(out), "--seconds", "0.3", "--cameras", "2", "--scenario", "crossing",
                 "--width", "160", "--height", "90", "--seed", "9"]) == 0
    text = capsys.readouterr().out
    assert "frames per camera: front 3, front_left 3" in text and "pedestrian" in text
    with DriveReader(out) as r:
        assert r.cameras == ("front", "front_left")


def test_cli_renders_the_cameras_of_a_rig_file(tmp_path, capsys):
    rig_file = tmp_path / "rig.yaml"
    save_rig(Rig([default_rig(6)["side_right"]]), rig_file)
    out = tmp_path / "rig.mcap"
    assert main(["synth", "--out", str(out), "--rig", str(rig_file), "--seconds", "0.2", "--width", "128"]) == 0
    with DriveReader(out) as r:
        assert r.cameras == ("side_right",)
        assert (r.rig["side_right"].width, r.rig["side_right"].height) == (128, 80)   # 1280x800 scaled
        assert r.rig["side_right"].distortion == "equidistant"


def test_cli_rejects_bad_parameters_with_a_clear_message(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "x.mcap"), "--fps", "10", "--jitter-ms", "60"]) == 2
    assert "jitter_ms" in capsys.readouterr().err
    assert not (tmp_path / "x.mcap").exists()


@pytest.mark.parametrize("field,value", [("scenario", "rush_hour"), ("num_cameras", 7), ("drop_prob", 1.0),
                                         ("width", 333), ("image_format", "png"), ("seconds", 0.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SynthConfig(**{field: value})
