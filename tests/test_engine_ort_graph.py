"""The ONNX Runtime engine's exact graph rewrites (perception/engine/ort_graph.py) on real sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from perception.engine.onnxruntime import OnnxRuntimeEngine  # noqa: E402
from perception.engine.ort_graph import split_concat_convs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo.onnx"
TEACHER = ROOT.parent / "shared" / "data" / "models" / "yolox_nano.onnx"


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(session, rng) -> dict:
    feeds = {}
    for i in session.get_inputs():
        shape = [2 if not isinstance(d, int) else d for d in i.shape]
        feeds[i.name] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("path", [DEMO, TEACHER], ids=["demo", "yolox-nano"])
def test_split_concat_convs_keeps_the_outputs_and_drops_the_concatenations(path):
    if not path.exists():
        pytest.skip(f"{path} absent (shared test data)")
    model = onnx.load(str(path))
    concats = sum(n.op_type == "Concat" for n in model.graph.node)
    rewritten = onnx.load(str(path))
    removed = split_concat_convs(rewritten)
    assert removed >= 5
    assert sum(n.op_type == "Concat" for n in rewritten.graph.node) == concats - removed
    onnx.checker.check_model(rewritten)
    a, b = _session(model), _session(rewritten)
    feeds = _feeds(a, np.random.default_rng(0))
    for name, x, y in zip([o.name for o in a.get_outputs()], a.run(None, feeds), b.run(None, feeds)):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(x).max())), err_msg=name)


def _graph(second_reader: str, width: int = 4) -> onnx.ModelProto:
    """x, y [1,width,4,4] -> cat -> Conv 1x1 (2 width -> 3), and cat also read by `second_reader`."""
    w = numpy_helper.from_array(np.arange(6 * width, dtype=np.float32).reshape(3, 2 * width, 1, 1) / 10, "w")
    b = numpy_helper.from_array(np.array([1.0, -1.0, 0.5], np.float32), "b")
    nodes = [helper.make_node("Concat", ["x", "y"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w", "b"], ["out"], name="conv", kernel_shape=[1, 1])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])]
    if second_reader == "Relu":
        nodes.append(helper.make_node("Relu", ["cat"], ["other"]))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, [1, 2 * width, 4, 4]))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, width, 4, 4]) for n in ("x", "y")]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, [w, b]),
                             opset_imports=[helper.make_opsetid("", 18)])


def test_split_concat_convs_leaves_a_concatenation_another_op_reads_or_of_narrow_parts():
    model = _graph("Relu")
    assert split_concat_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Concat", "Conv", "Relu"]
    narrow = _graph("none", width=3)        # as YOLOX's Focus slices of the image: slower split (ort_graph.py)
    assert split_concat_convs(narrow) == 0
    assert [n.op_type for n in narrow.graph.node] == ["Concat", "Conv"]


def test_split_concat_convs_on_a_small_graph_is_the_sum_of_partial_convolutions():
    model = _graph("none")
    rng = np.random.default_rng(1)
    feeds = {k: rng.normal(size=(1, 4, 4, 4)).astype(np.float32) for k in ("x", "y")}
    ref = _session(model).run(None, feeds)[0]
    assert split_concat_convs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv", "Conv", "Add"]
    assert sorted(t.name for t in model.graph.initializer) == ["b", "conv/split_w0", "conv/split_w1"]
    np.testing.assert_allclose(_session(model).run(None, feeds)[0], ref, rtol=1e-6, atol=1e-6)


def test_the_cpu_engine_runs_the_rewritten_graph_with_the_same_outputs():
    engines = [OnnxRuntimeEngine(DEMO, threads=1, rewrite=r) for r in (True, False)]
    assert engines[0].concats_split >= 5 and engines[1].concats_split == 0
    rng = np.random.default_rng(2)
    c = engines[0].contract
    images = rng.normal(size=(2, 3, c.input_height, c.input_width)).astype(np.float32)
    states = [e.initial_state(2) for e in engines]
    for step in range(2):
        t = np.full(2, 100_000_000 * (step + 1), np.int64)
        (h0, states[0]), (h1, states[1]) = (e.run(images, t, s) for e, s in zip(engines, states))
        for k, v in h0.as_dict().items():
            np.testing.assert_allclose(v, h1.as_dict()[k], rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(v).max())), err_msg=k)



def test_split_concat_convs_leaves_a_concatenation_of_unsized_parts():
    model = _graph("none")
    model.graph.input[1].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "c", 4, 4]))
    assert split_concat_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Concat", "Conv"]
