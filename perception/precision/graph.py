"""Graph facts the precision transforms share: tensor element types and the image-feature data flow."""

from __future__ import annotations

import onnx
from onnx import TensorProto

FEATURE_INPUTS = ("images", "state_features")


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor (inputs, initializers, constants, inferred intermediates)."""
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def feature_tensors(model: onnx.ModelProto, types: dict[str, int],
                    feature_inputs: tuple[str, ...] = FEATURE_INPUTS) -> set[str]:
    """Float tensors computed from the feature inputs: the large image / feature-map data flow. What is
    computed only from the small per-camera inputs (state_ages, dt, fresh) and constants is not in it."""
    inputs = {i.name for i in model.graph.input}
    missing = [name for name in feature_inputs if name not in inputs]
    if missing:
        raise ValueError(f"feature inputs {missing} are not graph inputs")
    tainted = set(feature_inputs)
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(i in tainted for i in node.input):
            tainted.update(o for o in node.output if types.get(o) == TensorProto.FLOAT)
    return tainted


def feature_nodes(model: onnx.ModelProto, types: dict[str, int] | None = None,
                  feature_inputs: tuple[str, ...] = FEATURE_INPUTS) -> list[onnx.NodeProto]:
    """Nodes with at least one float input from `feature_tensors`, in graph order."""
    types = elem_types(model) if types is None else types
    tainted = feature_tensors(model, types, feature_inputs)
    return [n for n in model.graph.node if any(i in tainted for i in n.input)]


def output_nodes(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    """Nodes of `op_type` with no other `op_type` node downstream: the last layers before the outputs."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    reaches: dict[int, bool] = {}   # node id -> an op_type node is downstream of it
    for node in reversed(model.graph.node):
        reaches[id(node)] = any(c.op_type == op_type or reaches.get(id(c), False)
                                for o in node.output for c in consumers.get(o, []))
    return [n for n in model.graph.node if n.op_type == op_type and not reaches[id(n)]]


DATA_MOVEMENT_OPS = frozenset({"Concat", "Expand", "Reshape", "Slice", "Unsqueeze", "Squeeze", "Identity",
                               "Transpose", "Gather", "Split", "Tile", "Flatten"})


def time_valued_tensors(model: onnx.ModelProto, types: dict[str, int],
                        feature_inputs: tuple[str, ...] = FEATURE_INPUTS) -> set[str]:
    """Float tensors that hold time quantities (ages, dt and what is computed from them only), also after
    being moved into a larger tensor (the age planes concatenated to the fused features). One scale for
    such a tensor would be set by the feature range and wipe out the ages, so it must not be quantized."""
    features = feature_tensors(model, types, feature_inputs)
    timed = {i.name for i in model.graph.input if i.name not in feature_inputs}
    out = {name for name in timed if types.get(name) == TensorProto.FLOAT}
    for node in model.graph.node:
        floats = [o for o in node.output if types.get(o) == TensorProto.FLOAT]
        if any(i in timed for i in node.input):
            timed.update(node.output)
            if node.op_type in DATA_MOVEMENT_OPS or not any(i in features for i in node.input):
                out.update(floats)
    return out


FOLDED_ACTIVATIONS = frozenset({"Relu"})   # ONNX Runtime's Q/DQ pass folds these into the convolution before them


def float_stem(model: onnx.ModelProto, types: dict[str, int], image_input: str) -> set[str]:
    """Names of the stem convolutions (the first on the image path) and of the convolutions reading the
    stem's output, when the stem's activation is not folded into it (SiLU = x * sigmoid(x), not ReLU); else
    empty. Such a stem's output is rounded to int8 twice, before and after the activation, each time on
    one scale set by the raw-pixel extremes: on YOLOX-Nano (0-255 input) the range is +-80 while the typical
    channel varies by less than one step, so its signal is erased (docs/tensorrt.md)."""
    features = feature_tensors(model, types, (image_input,))
    depth = {image_input: 0}   # convolutions on the way from the image input
    for node in model.graph.node:
        before = [depth[i] for i in node.input if i in depth]
        if before:
            depth.update((o, max(before) + (node.op_type == "Conv")) for o in node.output if o in features)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    stems = {n.output[0] for n in convs if depth.get(n.output[0]) == 1}
    activations = [n.op_type for n in model.graph.node if any(i in stems for i in n.input)]
    if all(op in FOLDED_ACTIVATIONS for op in activations):
        return set()
    return {n.name for n in convs if depth.get(n.output[0]) in (1, 2)}


def silu_pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto]]:
    """(Sigmoid, Mul) node pairs computing SiLU, x * sigmoid(x), in graph order of the Mul."""
    sigmoids = {n.output[0]: n for n in model.graph.node if n.op_type == "Sigmoid"}
    pairs = []
    for node in model.graph.node:
        if node.op_type == "Mul" and len(node.input) == 2:
            for gate, x in (node.input, node.input[::-1]):
                if gate in sigmoids and sigmoids[gate].input[0] == x:
                    pairs.append((sigmoids[gate], node))
                    break
    return pairs


def conv_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates per output value of each convolution with constant weights: input channels per
    group x kernel area (a 3x3 depthwise convolution: 9; a 1x1 on 128 channels: 128)."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return {n.name: weights[n.input[1]][1] * weights[n.input[1]][2] * weights[n.input[1]][3]
            for n in model.graph.node if n.op_type == "Conv" and len(weights.get(n.input[1], ())) == 4}
