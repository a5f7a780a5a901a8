"""Model cards of plug-in detectors (perception/model_card.py): every field validated at load with a
ModelContractError naming the file and the field; side YAML, ONNX metadata and bundled cards."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import onnx
import pytest
import yaml

from perception.contract import graph_sha256
from perception.errors import ModelContractError
from perception.labels import CLASS_INDEX
from perception.model_card import CARD_METADATA_KEY, ModelCard, bundled_card, card_path, load_any_model, read_card
from tests.test_yolox_decode import decoded_model

ROOT = Path(__file__).resolve().parents[1]
YOLOX_CARD = ROOT / "models" / "yolox_nano.card.yaml"


def card_dict(sha: str) -> dict:
    return {
        "version": 1, "model_id": "tiny", "format": "decoded", "sha256": sha,
        "input": {"name": "images", "width": 64, "height": 64, "color_order": "BGR", "value_range": 255,
                  "mean": [0, 0, 0], "std": [1, 1, 1], "pad_value": 114, "letterbox": "top-left"},
        "output": {"boxes": "boxes", "scores": "scores", "labels": "labels"},
        "num_classes": 3, "class_map": {0: "car", 1: "pedestrian"},
    }


@pytest.fixture
def model(tmp_path) -> Path:
    return decoded_model(tmp_path / "tiny.onnx", [[0, 0, 8, 8]], [0.9], [0])


def write(model: Path, d: dict) -> None:
    card_path(model).write_text(yaml.safe_dump(d))


def sha(model: Path) -> str:
    return hashlib.sha256(model.read_bytes()).hexdigest()


def test_a_valid_side_card_loads(model):
    write(model, card_dict(sha(model)))
    loaded = load_any_model(model)
    card = loaded.contract
    assert isinstance(card, ModelCard) and card.stateless and loaded.data == model.read_bytes()
    assert card.class_map == {0: CLASS_INDEX["car"], 1: CLASS_INDEX["pedestrian"]}
    norm = card.normalization
    assert (norm.color_order, norm.value_range, norm.pad_value, card.letterbox) == ("BGR", 255.0, 114.0, "top-left")


def nested_set(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    target = d
    for p in parents:
        target = target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return d


@pytest.mark.parametrize(("path", "value", "words"), [
    ("format", "ssd", "'format': must be one of"),
    ("version", 2, "card version 2 is not supported"),
    ("model_id", KeyError, "fields missing ['model_id']"),
    ("extra", 1, "unknown ['extra']"),
    ("input.color_order", "GBR", "'input.color_order'"),
    ("input.value_range", 100, "'input.value_range': must be 1 or 255"),
    ("input.std", [1, 0, 1], "'input.std': must be > 0"),
    ("input.mean", [0, 0], "'input.mean': expected 3 numbers"),
    ("input.pad_value", 300, "'input.pad_value'"),
    ("input.letterbox", "middle", "'input.letterbox'"),
    ("input.width", 0, "'input.width': expected a positive integer"),
    ("class_map", {0: "bus"}, "maps to 'bus', not one of"),
    ("class_map", {7: "car"}, "key 7 is not a class id in 0..2"),
    ("class_map", {}, "'class_map': expected a non-empty mapping"),
    ("sha256", "abc", "'sha256': expected 64 lowercase hex digits"),
    ("sha256", "0" * 64, "the card was written for another file"),
    ("output.boxes", "bbox", "missing output 'bbox'"),
    ("input.width", 32, "input 'images' has shape [1, 3, 64, 64], card says [1, 3, 64, 32]"),
    ("input.name", "image", "card says one input 'image'"),
    ("merge_riders", "yes", "'merge_riders': expected true or false"),
    ("merge_riders", True, "'merge_riders': needs classes mapped to both pedestrian and cyclist"),
])
def test_bad_cards_are_clear_model_contract_errors(model, path, value, words):
    write(model, nested_set(card_dict(sha(model)), path, value))
    with pytest.raises(ModelContractError) as e:
        load_any_model(model)
    message = str(e.value)
    assert words in message and ("tiny.card.yaml" in message or "tiny.onnx" in message)


def test_yolox_raw_card_checks_strides_and_the_output_shape(model):
    d = card_dict(sha(model))
    d.update(format="yolox-raw", output={"name": "boxes", "strides": [8, 16, 32]})
    d["input"]["width"] = d["input"]["height"] = 64
    write(model, d)
    with pytest.raises(ModelContractError, match=r"output 'boxes' has shape \[1, 1, 4\], card says \[1, 84, 8\]"):
        load_any_model(model)
    d["output"]["strides"] = [8, 24]
    write(model, d)
    with pytest.raises(ModelContractError, match=r"'output.strides': \[8, 24\] must be non-empty and divide"):
        load_any_model(model)


def test_card_in_onnx_metadata_is_checked_against_the_graph_hash(model, tmp_path):
    proto = onnx.load(str(model))
    d = card_dict(graph_sha256(proto))
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, json.dumps(d)
    embedded = tmp_path / "embedded.onnx"
    onnx.save(proto, str(embedded))
    card, _ = read_card(embedded)
    assert card.model_id == "tiny" and card.class_map[1] == CLASS_INDEX["pedestrian"]  # JSON keys are strings
    proto.metadata_props[-1].value = json.dumps(dict(d, sha256="1" * 64))
    onnx.save(proto, str(embedded))
    with pytest.raises(ModelContractError, match=r"metadata perception.card.*written for another file"):
        read_card(embedded)
    proto.metadata_props[-1].value = "{not json"
    onnx.save(proto, str(embedded))
    with pytest.raises(ModelContractError, match="card is not valid JSON"):
        read_card(embedded)


def test_a_model_without_contract_or_card_says_what_is_missing(model):
    with pytest.raises(ModelContractError, match="no model card tiny.card.yaml next to it and no bundled card"):
        load_any_model(model)


def test_the_bundled_yolox_card_is_valid_and_found_by_the_file_hash():
    raw = yaml.safe_load(YOLOX_CARD.read_text())
    card = ModelCard.from_dict(raw, str(YOLOX_CARD))
    assert card.format == "yolox-raw" and card.num_anchors == 3549 and card.strides == (8, 16, 32)
    assert card.class_map == {0: CLASS_INDEX["pedestrian"], 1: CLASS_INDEX["cyclist"], 2: CLASS_INDEX["car"],
                              3: CLASS_INDEX["cyclist"], 5: CLASS_INDEX["truck"], 7: CLASS_INDEX["truck"]}
    assert card.merge_riders
    assert bundled_card(card.sha256) == YOLOX_CARD
    assert bundled_card("0" * 64) is None


def test_int8_of_a_plug_in_detector_carries_its_card_in_the_metadata(model, tmp_path):
    """perception/precision/int8.py on a card model: the quantized graph gets the card re-embedded with the
    new graph hash and an int8 model id, and loads again (opset 11 models are raised to 13 first)."""
    import numpy as np

    from perception.precision.int8 import quantize_int8
    from perception.precision.metadata import read_precision

    write(model, card_dict(sha(model)))
    samples = [{"images": np.random.default_rng(k).uniform(0, 255, (1, 3, 64, 64)).astype(np.float32)}
               for k in range(2)]
    out = tmp_path / "tiny.int8.onnx"
    card = quantize_int8(model, out, samples, method="minmax")
    assert card.model_id == "tiny+int8-minmax" and card.sha256 == graph_sha256(onnx.load(str(out)))
    again, _ = read_card(out)
    assert again == card and read_precision(out).precision == "int8"
    with pytest.raises(Exception, match="calibration sample 0"):
        quantize_int8(model, tmp_path / "bad.onnx", [{"image": samples[0]["images"]}])
