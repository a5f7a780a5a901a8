"""The bundled demo model: manifest matches the file, contract matches the default config, and it finds
the cars of a synthetic drive it was not trained on, through the node's preprocessing and decoding."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from calib.remap import build_remap
from perception.contract import ModelExpectation, load_model
from perception.decode import DecodeConfig, Decoder
from perception.labels import CLASSES
from perception.preprocess import FastPreprocessor, Normalization

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo.onnx"
MANIFEST = ROOT / "models" / "demo.json"
pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="models/demo.onnx not built (python models/build_demo.py)")


def test_manifest_describes_the_file():
    manifest = json.loads(MANIFEST.read_text())
    data = MODEL.read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["bytes"] == len(data)
    assert len(data) < 5 * 2**20
    assert manifest["model_id"] == load_model(MODEL).contract.model_id
    held_out = manifest["metrics"]["held_out_test"]
    assert {"AP@0.5/car", "AP@0.5/pedestrian", "range_rel_error_median_under_40m",
            "velocity_error_median_px_s"} <= set(held_out)
    assert manifest["command"] == "python models/build_demo.py"


def test_the_int8_copy_is_the_onnxruntime_default_only_within_one_point():
    from perception.node.defaults import DEMO_MODEL, DEMO_MODEL_INT8, default_model

    int8 = json.loads(MANIFEST.read_text())["int8"]
    if not int8["kept"]:
        assert not DEMO_MODEL_INT8.exists() and default_model("onnxruntime") == DEMO_MODEL
        return
    data = DEMO_MODEL_INT8.read_bytes()
    assert int8["sha256"] == hashlib.sha256(data).hexdigest() and len(data) < 5 * 2**20
    assert int8["model_id"] == load_model(DEMO_MODEL_INT8).contract.model_id
    losses = [m["fp32"] - m["int8"] for m in int8["mAP@0.5"].values()]
    assert "cut_in-100" in int8["mAP@0.5"] and max(losses) == int8["max_loss"] <= 0.01
    assert default_model("onnxruntime") == DEMO_MODEL_INT8
    assert default_model("tensorrt") == default_model("torch") == DEMO_MODEL


def test_contract_matches_the_default_configuration():
    from perception.model.config import ModelConfig

    cfg = ModelConfig()
    load_model(MODEL, ModelExpectation(classes=CLASSES, input_height=cfg.input_height, input_width=cfg.input_width,
                                       mean=cfg.mean, std=cfg.std, stride=cfg.stride, window=cfg.window))


def test_demo_model_finds_the_cars_of_an_unseen_drive():
    synth = pytest.importorskip("replay.synth")
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.io.drive import DriveReader

    drive = synth.cached_drive(seed=77, seconds=1.0, fps=10.0, num_cameras=1, width=960, height=540,
                               scenario="lead_brake")
    engine = OnnxRuntimeEngine(MODEL, threads=1)
    c = engine.contract
    with DriveReader(drive) as reader:
        camera = reader.rig["front"]
        table = build_remap(camera, c.input_width, c.input_height)
        pre = FastPreprocessor([table], Normalization(c.mean, c.std))
        decoder = Decoder(c, [table], DecodeConfig.for_classes(c.classes, 0.3))
        labels = {gt.t_ns: gt for gt in reader.ground_truth("front")}
        state = engine.initial_state(1)
        hits = misses = 0
        for cf in reader.frames(["front"]):
            heads, state = engine.run(pre.run([cf.frame]), np.array([cf.t_ns]), state)
            dets = decoder(heads)
            ranges = {o.id: o.range for o in labels[cf.t_ns].objects}
            for box in labels[cf.t_ns].boxes:
                x0, y0, x1, y1 = box.box
                if box.cls != "car" or box.occlusion > 0.3 or box.truncation > 0.3 or y1 - y0 < 40:
                    continue                                                  # clearly visible cars only
                cars = dets.select(dets.cls == CLASSES.index("car"))
                ious = [_iou(b, box.box) for b in cars.box]
                k = int(np.argmax(ious)) if ious else -1
                if k >= 0 and ious[k] >= 0.5 and abs(cars.range_m[k] - ranges[box.id]) < 0.2 * ranges[box.id]:
                    hits += 1
                else:
                    misses += 1
    assert hits >= 10 and hits >= 3 * misses, (hits, misses)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _build_demo():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_demo", ROOT / "models" / "build_demo.py")
    build_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_demo)
    return build_demo


def test_the_unseen_stills_leave_out_a_frame_of_a_training_clip():
    build_demo = _build_demo()
    stills = sorted(build_demo.UNSEEN_STILLS.glob("*.jpg"))
    if not stills or not all(p.exists() for p in build_demo.REAL_CLIPS.values()):
        pytest.skip("../shared/data (the dashcam stills and clips) is absent")
    # highway_images/solidWhiteRight.jpg is frame 20 of solidWhiteRight.mp4, in the part the student trains on;
    # the other five stills are other scenes
    assert build_demo.stills_in_training(stills) == {"solidWhiteRight.jpg": "solidWhiteRight frame 20"}


def test_verify_reports_each_figure_that_moved_and_none_of_the_manifest_against_itself():
    build_demo = _build_demo()
    metrics = {k: v for k, v in json.loads(MANIFEST.read_text())["metrics"].items() if k != "protocol"}
    assert build_demo.figure_differences(metrics, json.loads(json.dumps(metrics)), 0.005) == []
    moved = json.loads(json.dumps(metrics))
    pooled = moved["held_out_pooled"]
    pooled["AP@0.5/car"] -= 0.01                                  # beyond half a point
    pooled["AP@0.5/pedestrian"] += 0.001                          # within
    pooled["gt/car"] += 1                                         # a count: relative, 1 in 3013 is within
    del moved["real_held_out_vs_teacher"]["vtest"]["node"]["MOTA"]
    found, labelled = moved["recall_by_height_at_node_threshold"]["cut_in-100"]["car"]["<30"]
    moved["recall_by_height_at_node_threshold"]["cut_in-100"]["car"]["<30"] = [found - 1, labelled]
    assert [name for name, _, _ in build_demo.figure_differences(metrics, moved, 0.005)] == [
        "held_out_pooled/AP@0.5/car", "real_held_out_vs_teacher/vtest/node/MOTA",
        "recall_by_height_at_node_threshold/cut_in-100/car/<30"]
    nan = float("nan")
    assert build_demo.figure_differences({"a": nan, "b": [1, 2]}, {"a": nan, "b": [1, 3]}, 0.005) == [
        ("b", [1, 2], [1, 3])]


def test_evaluate_without_the_run_folders_carries_over_the_training_fields_of_this_models_manifest(tmp_path,
                                                                                                   monkeypatch):
    build_demo = _build_demo()
    monkeypatch.setattr(build_demo, "finetune_dir", lambda: tmp_path / "no-run")   # another machine: no checkpoints
    data = MODEL.read_bytes()
    manifest = json.loads(MANIFEST.read_text())
    assert build_demo.training_record(data) == {k: manifest[k] for k in build_demo.TRAINING_FIELDS}
    with pytest.raises(SystemExit, match="describes another model"):
        build_demo.training_record(data + b"\0")


def test_a_changed_drive_keeps_the_unchanged_frames_labels_moved_with_the_image(tmp_path, monkeypatch):
    from perception.frame import Frame
    from perception.io.drive import DriveReader, DriveWriter
    from perception.io.drive_images import frame_to_bgr
    from perception.labels import GroundTruth, GroundTruthBox, GroundTruthObject
    from tests.test_replay_support import T0, small_rig

    build_demo = _build_demo()
    monkeypatch.setattr(build_demo, "cache", lambda: tmp_path / "cache")
    rig = small_rig(num_cameras=1)
    camera = rig.cameras[0]
    image = np.full((camera.height, camera.width, 3), 60, np.uint8)
    image[10:30, 5:25] = (40, 120, 250)
    box = GroundTruthBox(1, "car", (5.0, 10.0, 25.0, 30.0), 0.0, 0.0)

    def labelled(path, objects=()):
        with DriveWriter(path, rig) as writer:
            for k in range(2):
                writer.write_frame(camera.name, T0 + k * 100_000_000, Frame.from_bgr(image))
                writer.write_ground_truth(GroundTruth(camera.name, T0 + k * 100_000_000, (box,), objects, None))
        return path

    drive = labelled(tmp_path / "labelled.mcap")
    for change, want_box in (("mirrored", (camera.width - 25.0, 10.0, camera.width - 5.0, 30.0)),
                             ("grey", box.box)):
        with DriveReader(build_demo.changed_drive(drive, change)) as reader:
            boxes = [gt.boxes[0].box for gt in reader.ground_truth(camera.name)]
            got = frame_to_bgr(next(iter(reader.frames())).frame)
        assert boxes == [want_box, want_box]
        assert np.array_equal(got, build_demo.changed_image(change, image))
    assert (got[10:30, 5:25, 0] == got[10:30, 5:25, 2]).all() and got[0, 0, 0] == 60   # grey: one value per pixel
    with DriveReader(build_demo.changed_drive(drive, "mirrored")) as reader:
        mirrored = frame_to_bgr(next(iter(reader.frames())).frame)
    assert (mirrored[10:30, camera.width - 25:camera.width - 5] == (40, 120, 250)).all()
    # zoomed: a box inside the centre crop scales by 1.3 about it, one the crop cuts is clipped (its truncation is the
    # share cut off), one outside the crop is dropped; the image moves with the labels
    image[100:140, 140:180] = (250, 250, 250)
    zoomed_boxes = (GroundTruthBox(2, "car", (140.0, 100.0, 180.0, 140.0), 0.0, 0.0),
                    GroundTruthBox(3, "pedestrian", (30.0, 100.0, 50.0, 120.0), 0.0, 0.2), box)
    with DriveWriter(tmp_path / "zoom.mcap", rig) as writer:
        writer.write_frame(camera.name, T0, Frame.from_bgr(image))
        writer.write_ground_truth(GroundTruth(camera.name, T0, zoomed_boxes, (), None))
    with DriveReader(build_demo.changed_drive(tmp_path / "zoom.mcap", "zoomed 1.3x")) as reader:
        centre, cut = next(iter(reader.ground_truth(camera.name))).boxes
        zoomed = frame_to_bgr(next(iter(reader.frames())).frame)
    x0, y0 = camera.width * (1 - 1 / 1.3) / 2, camera.height * (1 - 1 / 1.3) / 2
    assert centre.box == pytest.approx((1.3 * (140 - x0), 1.3 * (100 - y0), 1.3 * (180 - x0), 1.3 * (140 - y0)))
    assert cut.box == pytest.approx((0.0, 1.3 * (100 - y0), 1.3 * (50 - x0), 1.3 * (120 - y0)))
    assert cut.truncation == pytest.approx(1 - (50 - x0) / 20) and cut.occlusion == 0.2
    bx0, by0, bx1, by1 = (round(v) for v in centre.box)
    assert (zoomed[by0 + 2:by1 - 2, bx0 + 2:bx1 - 2] == 250).all()
    assert (zoomed[by0 - 3, bx0:bx1] == 60).all() and (zoomed[by0:by1, bx1 + 2] == 60).all()
    with_3d = labelled(tmp_path / "3d.mcap", (GroundTruthObject(1, "car", (10.0, 2.0, 0.0), (0.0, 0.0, 0.0),
                                                               (4.0, 2.0, 1.5), 0.0),))
    with pytest.raises(ValueError, match="2D labels only"):
        build_demo.changed_drive(with_3d, "mirrored")
