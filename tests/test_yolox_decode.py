"""YOLOX decode (perception/decode/yolox.py) against an independent numpy + OpenCV decode, on the real
YOLOX-Nano and a real dashcam still, and the `decoded` format through real ONNX Runtime."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from calib.remap import build_remap
from perception.decode import DecodeConfig, DetectorDecoder, make_decoder
from perception.decode.yolox import yolox_grid
from perception.engine.onnxruntime import open_detector
from perception.io.drive_common import default_camera
from perception.labels import CLASS_INDEX, CLASSES
from perception.model_card import ModelCard, card_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
YOLOX = SHARED / "models" / "yolox_nano.onnx"
STILL = SHARED / "dashcam" / "highway_images" / "solidWhiteRight.jpg"
CARD = ROOT / "models" / "yolox_nano.card.yaml"
COCO_TO_PROJECT = {0: "pedestrian", 1: "cyclist", 2: "car", 3: "cyclist", 5: "truck", 7: "truck"}

needs_shared = pytest.mark.skipif(not (YOLOX.is_file() and STILL.is_file()),
                                  reason="../shared/data (YOLOX-Nano, dashcam stills) is absent")


def yolox_preprocess(bgr: np.ndarray, size: int = 416) -> tuple[np.ndarray, float]:
    """Megvii YOLOX's own preprocessing (yolox/data/data_augment.py preproc): resize, pad 114 top-left."""
    r = min(size / bgr.shape[0], size / bgr.shape[1])
    resized = cv2.resize(bgr, (int(bgr.shape[1] * r), int(bgr.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    padded = np.full((size, size, 3), 114, np.uint8)
    padded[:resized.shape[0], :resized.shape[1]] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32), r


def reference_decode(raw: np.ndarray, r: float, width: int, height: int, thr: float, iou: float) -> list:
    """YOLOX demo_postprocess written out anchor by anchor, boxes / r into the source, one
    cv2.dnn.NMSBoxes per project class. -> [(project class, score, x0, y0, x1, y1)] (pixel centres at
    integers, clipped to the image)."""
    rows = []
    a = 0
    for s in (8, 16, 32):
        for gy in range(416 // s):
            for gx in range(416 // s):
                dx, dy, lw, lh, obj = raw[a, :5]
                c = int(np.argmax(raw[a, 5:]))
                score = float(obj * raw[a, 5 + c])
                a += 1
                if c not in COCO_TO_PROJECT or score < thr:
                    continue
                cx, cy, w, h = (gx + dx) * s, (gy + dy) * s, np.exp(lw) * s, np.exp(lh) * s
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / r - 0.5
                box = np.clip(box, -0.5, [width - 0.5, height - 0.5, width - 0.5, height - 0.5])
                if box[2] > box[0] and box[3] > box[1]:
                    rows.append((CLASS_INDEX[COCO_TO_PROJECT[c]], score, *box))
    kept = []
    for k in range(len(CLASSES)):
        mine = [x for x in rows if x[0] == k]
        if mine:
            xywh = [[x[2], x[3], x[4] - x[2], x[5] - x[3]] for x in mine]
            for i in np.asarray(cv2.dnn.NMSBoxes(xywh, [x[1] for x in mine], 0.0, iou)).reshape(-1):
                kept.append(mine[int(i)])
    return sorted(kept, key=lambda x: -x[1])


@pytest.fixture(scope="module")
def yolox_engine():
    if not YOLOX.is_file():
        pytest.skip("../shared/data/models/yolox_nano.onnx is absent")
    return open_detector(YOLOX, card=CARD, threads=1)


@needs_shared
def test_yolox_decode_matches_independent_decode_on_a_real_still(yolox_engine):
    bgr = cv2.imread(str(STILL))
    height, width = bgr.shape[:2]
    images, r = yolox_preprocess(bgr)
    outputs = yolox_engine.detect(images)
    table = build_remap(default_camera("cam", width, height), 416, 416, "letterbox", align="top-left")
    decoder = make_decoder(yolox_engine.contract, [table], DecodeConfig.for_classes(CLASSES, 0.3, nms_iou=0.45))
    assert isinstance(decoder, DetectorDecoder)
    dets = decoder(outputs)
    want = reference_decode(outputs["output"][0], r, width, height, 0.3, 0.45)

    assert len(want) >= 3 and len(dets) == len(want)
    order = np.argsort(-dets.score, kind="stable")
    np.testing.assert_array_equal(dets.cls[order], [w[0] for w in want])
    np.testing.assert_allclose(dets.score[order], [w[1] for w in want], rtol=1e-6)
    np.testing.assert_allclose(dets.box[order], [w[2:] for w in want], atol=2e-3)
    assert (dets.box[:, 2] > dets.box[:, 0]).all() and (dets.box[:, 3] > dets.box[:, 1]).all()
    assert (dets.box >= -0.5).all() and (dets.box[:, [0, 2]] <= width - 0.5).all()
    assert np.isnan(dets.range_m).all() and np.isnan(dets.image_velocity).all()
    # the README's description of this model on these stills: nearby cars with scores 0.75-0.9
    cars = dets.score[(dets.cls == CLASS_INDEX["car"]) & (dets.box[:, 3] > height * 0.55)]
    assert ((cars >= 0.75) & (cars <= 0.9)).sum() >= 1


def test_yolox_grid_layout_is_row_major_per_stride():
    grid, stride = yolox_grid(32, 16, (8, 16))
    assert grid.shape == (4 * 2 + 2 * 1, 2)
    np.testing.assert_array_equal(grid[:5], [[0, 0], [1, 0], [2, 0], [3, 0], [0, 1]])
    np.testing.assert_array_equal(stride, [8] * 8 + [16] * 2)


def decoded_model(path: Path, boxes, scores, labels, size: int = 64) -> Path:
    """A real ONNX 'decoded' detector: fixed outputs plus 0 * mean(image) (so the image is an input)."""
    zero = helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0)
    nodes = [zero, helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    for name, value, dtype in (("boxes", boxes, TensorProto.FLOAT), ("scores", scores, TensorProto.FLOAT)):
        arr = np.asarray(value, np.float32)[None]
        inits.append(helper.make_tensor(name + "_c", dtype, arr.shape, arr.ravel()))
        nodes.append(helper.make_node("Add", [name + "_c", "z"], [name]))
    lab = np.asarray(labels, np.int64)[None]
    inits.append(helper.make_tensor("labels_c", TensorProto.INT64, lab.shape, lab.ravel()))
    nodes.append(helper.make_node("Identity", ["labels_c"], ["labels"]))
    k = len(labels)
    graph = helper.make_graph(
        nodes, "decoded", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, k, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, k]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_card(model: Path, **override) -> Path:
    text = {
        "version": 1, "model_id": "tiny-decoded", "format": "decoded",
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "input": {"name": "images", "width": 64, "height": 64, "color_order": "RGB", "value_range": 1,
                  "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "pad_value": None, "letterbox": "centre"},
        "output": {"boxes": "boxes", "scores": "scores", "labels": "labels"},
        "num_classes": 3, "class_map": {0: "car", 2: "pedestrian"},
    }
    text.update(override)
    import yaml

    out = card_path(model)
    out.write_text(yaml.safe_dump(text))
    return out


def test_decoded_format_runs_in_onnxruntime_and_maps_boxes_to_the_source(tmp_path):
    # 128x64 source, letterboxed centred into 64x64: s = 0.5, image rows 16..47 of the input
    boxes = [[8, 24, 24, 40], [40, 20, 56, 44], [0, 16, 64, 48], [30, 30, 31, 31]]
    model = decoded_model(tmp_path / "tiny.onnx", boxes, [0.9, 0.8, 0.6, 0.1], [0, 2, 1, 0])
    write_card(model)
    engine = open_detector(model)
    assert engine.contract.stateless and engine.contract.format == "decoded"
    state = engine.initial_state(2)
    outputs, same = engine.run(np.zeros((2, 3, 64, 64), np.float32), np.array([0, 0]), state)
    assert same is state and outputs["boxes"].shape == (2, 4, 4)
    table = build_remap(default_camera("c", 128, 64), 64, 64, "letterbox")
    dets = DetectorDecoder(engine.contract, [table, table], DecodeConfig.for_classes(CLASSES, 0.3))(
        outputs, np.array([True, False]))
    # label 1 is not in the class map (dropped), the 0.1 box is under the threshold; camera 1 is stale
    assert len(dets) == 2 and (dets.camera == 0).all()
    np.testing.assert_array_equal(dets.cls, [CLASS_INDEX["car"], CLASS_INDEX["pedestrian"]])
    # network edge x -> source edge 2x; network edge y -> source edge 2 (y - 16); pixel centres at integers
    np.testing.assert_allclose(dets.box, [[15.5, 15.5, 47.5, 47.5], [79.5, 7.5, 111.5, 55.5]], atol=1e-4)


def test_the_card_is_found_next_to_a_copy_of_the_model(tmp_path):
    if not YOLOX.is_file():
        pytest.skip("../shared/data/models/yolox_nano.onnx is absent")
    model = tmp_path / "yolox_nano.onnx"
    shutil.copyfile(YOLOX, model)
    shutil.copyfile(CARD, card_path(model))
    card = open_detector(model).contract
    assert isinstance(card, ModelCard) and card.class_map[7] == CLASS_INDEX["truck"] and card.letterbox == "top-left"


def test_tensorrt_detector_without_tensorrt_is_a_clear_error():
    if not YOLOX.is_file():
        pytest.skip("../shared/data/models/yolox_nano.onnx is absent")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: tests/test_yolox_tensorrt_gpu.py runs it")
    except ImportError:
        pass
    from perception.engine.trt_cache import EngineBuildError
    from perception.engine.tensorrt_detector import TensorRTDetector

    with pytest.raises(EngineBuildError, match="TensorRT is not installed"):
        TensorRTDetector(YOLOX, card=CARD)
