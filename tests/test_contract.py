"""The model contract in ONNX metadata: written by export, checked on load, mismatches named."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from perception.contract import (METADATA_KEY, ModelContract, ModelExpectation, check_expectation,  # noqa: E402
                                 embed_contract, load_model)
from perception.errors import ModelContractError  # noqa: E402
from tests.test_model import TINY, exported_tiny  # noqa: E402


@pytest.fixture
def tiny_path():
    return exported_tiny()[1]


def edited(tmp_path, src, edit) -> str:
    """A copy of model `src` after `edit(proto)`."""
    proto = onnx.load_model(str(src))
    edit(proto)
    out = tmp_path / "edited.onnx"
    onnx.save_model(proto, str(out))
    return str(out)


def edit_contract(**changes):
    def edit(proto):
        text = next(p.value for p in proto.metadata_props if p.key == METADATA_KEY)
        d = json.loads(text)
        d.update(changes)
        for p in proto.metadata_props:
            if p.key == METADATA_KEY:
                p.value = json.dumps(d)
    return edit


def test_export_writes_the_config_into_the_contract(tiny_path):
    loaded = load_model(tiny_path)
    c = loaded.contract
    assert c.classes == TINY.classes
    assert (c.input_height, c.input_width, c.stride, c.window) == (64, 96, 8, 3)
    assert c.state_shape == TINY.state_shape and c.mean == TINY.mean and c.std == TINY.std
    assert [h.name for h in c.heads] == ["heatmap", "size", "offset", "velocity", "log_depth"]
    assert c.model_id.startswith("tiny-") and len(c.graph_sha256) == 64
    assert loaded.data == tiny_path.read_bytes()
    assert ModelContract.from_json(c.to_json(), "x") == c
    proto = onnx.load_model(str(tiny_path))
    batch_dims = {v.name: v.type.tensor_type.shape.dim[0].dim_param for v in proto.graph.input}
    assert set(batch_dims.values()) == {"cameras"}           # batch = number of cameras, dynamic


def test_expectation_mismatches_are_named(tiny_path):
    load_model(tiny_path, ModelExpectation(classes=TINY.classes, input_height=64, input_width=96,
                                           mean=TINY.mean, std=TINY.std))
    with pytest.raises(ModelContractError) as e:
        load_model(tiny_path, ModelExpectation(classes=("car", "pedestrian"), input_width=448,
                                               mean=(0.5, 0.5, 0.5)))
    msg = str(e.value)
    assert str(tiny_path) in msg
    assert "classes: model has ['car', 'truck', 'pedestrian', 'cyclist'], configuration expects ['car', 'pedestrian']" in msg
    assert "input_width: model has 96, configuration expects 448" in msg
    assert "mean:" in msg and "input_height" not in msg


def test_missing_state_input_is_reported(tmp_path, tiny_path):
    def drop_state(proto):
        for v in proto.graph.input:
            if v.name == "state_features":
                v.name = "memory"
    with pytest.raises(ModelContractError, match="missing input 'state_features' \\(the model has no temporal state\\)"):
        load_model(edited(tmp_path, tiny_path, drop_state))


def test_unknown_head_layout_is_reported(tmp_path, tiny_path):
    with pytest.raises(ModelContractError, match="unknown head layout 'yolo-v8'"):
        load_model(edited(tmp_path, tiny_path, edit_contract(head_layout="yolo-v8")))


def test_inconsistent_state_shape_is_reported(tmp_path, tiny_path):
    with pytest.raises(ModelContractError, match="state_shape"):
        load_model(edited(tmp_path, tiny_path, edit_contract(state_shape=[2, 8, 8, 13])))


def test_edited_weights_fail_the_hash(tmp_path, tiny_path):
    def perturb(proto):
        t = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
        raw = bytearray(t.raw_data)
        raw[0] ^= 0xFF
        t.raw_data = bytes(raw)
    with pytest.raises(ModelContractError, match="graph hash .* differs"):
        load_model(edited(tmp_path, tiny_path, perturb))


def test_unsupported_version_and_bad_json(tmp_path, tiny_path):
    with pytest.raises(ModelContractError, match="contract version 99 is not supported"):
        load_model(edited(tmp_path, tiny_path, edit_contract(version=99)))

    def garble(proto):
        for p in proto.metadata_props:
            if p.key == METADATA_KEY:
                p.value = "{not json"
    with pytest.raises(ModelContractError, match="not valid JSON"):
        load_model(edited(tmp_path, tiny_path, garble))


def test_model_without_contract(tmp_path, tiny_path):
    def strip(proto):
        del proto.metadata_props[:]
    with pytest.raises(ModelContractError, match="no 'perception.contract' metadata"):
        load_model(edited(tmp_path, tiny_path, strip))


def test_untrusted_files(tmp_path, tiny_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07\xff\xff\xff\xff garbage" * 10)
    with pytest.raises(ModelContractError, match="junk.onnx: not a parseable ONNX model"):
        load_model(junk)
    with pytest.raises(ModelContractError, match="over the limit of 1000"):
        load_model(tiny_path, max_bytes=1000)
    with pytest.raises(ModelContractError, match="cannot read model file"):
        load_model(tmp_path / "absent.onnx")


def test_external_weights_are_refused(tmp_path, tiny_path):
    proto = onnx.load_model(str(tiny_path))
    out = tmp_path / "split.onnx"
    onnx.save_model(proto, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="split.onnx.data", size_threshold=0)
    with pytest.raises(ModelContractError, match="external file"):
        load_model(out)


def test_embed_replaces_an_older_contract(tiny_path):
    proto = onnx.load_model(str(tiny_path))
    c = load_model(tiny_path).contract
    embed_contract(proto, replace(c, model_id="other"))
    values = [p.value for p in proto.metadata_props if p.key == METADATA_KEY]
    assert len(values) == 1 and json.loads(values[0])["model_id"] == "other"


def test_check_expectation_accepts_equal_normalisation_within_rounding(tiny_path):
    c = load_model(tiny_path).contract
    check_expectation(c, ModelExpectation(mean=tuple(m + 1e-8 for m in c.mean)), "cfg")
