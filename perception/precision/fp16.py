"""Float32 ONNX -> float16 ONNX for strongly typed builds (TensorRT 11 takes precision from the graph).

Which nodes run in float16 is decided by data flow, not by a list of names:
- a node runs in float16 when its op is in FP16_OPS and one of its float inputs carries image features
  (is computed from a graph input in `feature_inputs`, by default `images` and `state_features`);
- everything else stays float32: the time bookkeeping (state_ages, dt, fresh and what is computed only
  from them: ages reach EMPTY_AGE = 1e4 s and are compared with max_age_s, where float16 would move the
  boundary), and numerically sensitive ops (Exp, Div, Log, Pow, Softmax, reductions...: not in FP16_OPS);
- graph inputs and outputs stay float32, so the model contract and every engine's I/O are unchanged.

Casts are inserted where a tensor crosses between the two regions (one per tensor and direction).
Weights used only by float16 nodes are stored as float16. Inputs an op requires as float32 whatever T is
(Resize scales) are recognised from the ONNX operator schema and left alone.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from perception.contract import ModelContract, load_model
from perception.errors import ModelContractError
from perception.precision.metadata import PrecisionInfo, finish_converted, precision_of
from perception.precision.graph import FEATURE_INPUTS, elem_types, feature_tensors

FP16_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "ConvTranspose", "Expand",
    "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu", "MatMul", "Max", "MaxPool",
    "Min", "Mul", "Pad", "Relu", "Reshape", "Resize", "Sigmoid", "Slice", "Split", "Squeeze", "Sub",
    "Tile", "Transpose", "Unsqueeze", "Where",
})
TYPE_AGNOSTIC_OPS = frozenset({"Shape", "Size"})  # read only the shape: no cast needed in front of them
FP16_MAX = float(np.finfo(np.float16).max)


def convert_fp16(model: onnx.ModelProto, feature_inputs: tuple[str, ...] = FEATURE_INPUTS,
                 keep_fp32_nodes: frozenset[str] | set[str] = frozenset()) -> tuple[onnx.ModelProto, list[str]]:
    """A float16 copy of `model` and the names of the nodes that now run in float16."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if any(a.type == onnx.AttributeProto.GRAPH for n in graph.node for a in n.attribute):
        raise ModelContractError("fp16: models with control-flow subgraphs are not supported")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelContractError("fp16: model has no default-domain opset")
    types = elem_types(model)
    try:
        tainted = feature_tensors(model, types, feature_inputs)
    except ValueError as e:
        raise ModelContractError(f"fp16: {e}") from None
    half: set[str] = set()                 # tensors that are float16 in the new graph
    fp16_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        carries = any(i in tainted for i in node.input)
        if node.op_type == "Cast" and node.domain in ("", "ai.onnx") and _cast_to(node) == TensorProto.FLOAT \
                and node.output[0] in tainted and node.name not in keep_fp32_nodes:
            _set_cast_to(node, TensorProto.FLOAT16)       # a cast into the feature path produces float16
            half.add(node.output[0])
            fp16_nodes.append(node)
        elif carries and node.op_type in FP16_OPS and node.domain in ("", "ai.onnx") \
                and node.name not in keep_fp32_nodes:
            half.update(o for o in node.output if types.get(o) == TensorProto.FLOAT)
            fp16_nodes.append(node)
    converted = {id(n) for n in fp16_nodes}

    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, k))

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            casts[key] = out = f"{name}__{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{name}__cast_{suffix}"))
        return casts[key]

    halved_weights: dict[str, str] = {}
    for node in graph.node:
        if id(node) in converted and node.op_type != "Cast":
            follows = _inputs_following_output_type(node, opset)
            for k, name in enumerate(node.input):
                if not name or k not in follows or types.get(name) != TensorProto.FLOAT or name in half:
                    continue
                if name in initializers:
                    node.input[k] = halved_weights.get(name) or _half_weight(name, initializers, consumers,
                                                                             converted, halved_weights, graph)
                else:
                    node.input[k] = cast(name, TensorProto.FLOAT16)
        elif id(node) not in converted and node.op_type not in TYPE_AGNOSTIC_OPS:
            for k, name in enumerate(node.input):
                if name in half:
                    node.input[k] = cast(name, TensorProto.FLOAT)
        new_nodes.append(node)

    for out in graph.output:
        if out.name in half:                      # keep the float32 output name: rename inside, cast out
            inner = f"{out.name}__fp16_value"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=TensorProto.FLOAT,
                                              name=f"{out.name}__cast_fp32"))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model, [n.name for n in fp16_nodes]


def _inputs_following_output_type(node: onnx.NodeProto, opset: int) -> set[int]:
    """Indices of the node's inputs whose type is the same type parameter as its first output."""
    schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    out_type = schema.outputs[0].type_str
    follows = set()
    for k in range(len(node.input)):
        param = schema.inputs[min(k, len(schema.inputs) - 1)]
        if k >= len(schema.inputs) and param.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
            continue
        if param.type_str == out_type:
            follows.add(k)
    return follows


def _half_weight(name: str, initializers: dict, consumers: dict, converted: set, done: dict, graph) -> str:
    """Store initializer `name` as float16: in place when only float16 nodes use it, else as a copy."""
    values = numpy_helper.to_array(initializers[name])
    if np.abs(values).max(initial=0.0) > FP16_MAX:
        raise ModelContractError(f"fp16: weight {name!r} holds values beyond the float16 range (max {FP16_MAX})")
    tensor = numpy_helper.from_array(values.astype(np.float16), name)
    if all(id(n) in converted for n, _ in consumers.get(name, [])) and name not in {o.name for o in graph.output}:
        initializers[name].CopyFrom(tensor)
        done[name] = name
    else:
        tensor.name = done[name] = f"{name}__fp16"
        graph.initializer.append(tensor)
    return done[name]


def _cast_to(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "to")


def _set_cast_to(node: onnx.NodeProto, to: int) -> None:
    for a in node.attribute:
        if a.name == "to":
            a.i = to


def write_fp16(source: str | os.PathLike, out: str | os.PathLike) -> ModelContract:
    """Convert the float32 model file `source` (verified against its contract) and write it to `out`."""
    loaded = load_model(source)
    model = onnx.load_model_from_string(loaded.data)
    origin = precision_of(model, str(source))
    if origin.precision != "fp32":
        raise ModelContractError(f"{source}: is already {origin.precision}; convert the float32 export")
    half, nodes = convert_fp16(model)
    info = PrecisionInfo("fp16", loaded.contract.graph_sha256, None,
                         {"fp16_nodes": len(nodes), "nodes": len(half.graph.node)})
    return finish_converted(half, loaded.contract, info, out)
