"""Graph rewrites the ONNX Runtime CPU engine applies to a model before it makes its session: exact in
arithmetic (the same sums in another order), invisible outside the engine (the file, its contract and hash,
and the other engines see the graph as exported).

- split_concat_convs: a convolution reading a channel concatenation, conv(cat(a, b)), becomes
  conv_a(a) + conv_b(b) (the weights split along input channels, the bias on the first part). ONNX Runtime
  runs a concatenation as a copy of every input, while it fuses an Add that follows a convolution into that
  convolution's output (the NCHWc kernels' `Sum` input), so the copies go and the sums come free: on the
  YOLOX-derived student, whose CSP stages each end in such a convolution, ~4 % of the engine time
  (benchmarks/model.py). TensorRT needs none of it (it writes a concatenation's inputs in place).
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper, shape_inference

# A part narrower than this becomes a convolution over a few input channels, which ORT's blocked (NCHWc)
# kernels run at a fraction of their rate: splitting YOLOX's Focus concatenation (four 3-channel slices of the
# image) made a student with the unfolded stem ~3 % slower, while splitting the temporal fusion's (32 + 64
# feature channels + 4 age planes) saves ~3 % (measured side by side, ORT 1.32 CPU, 1 thread).
MIN_PART_CHANNELS = 4


def split_concat_convs(model: onnx.ModelProto, min_channels: int = MIN_PART_CHANNELS) -> int:
    """Rewrite in place every channel concatenation of parts of at least `min_channels` channels that only
    convolutions read (group 1, weights and bias stored in the graph); returns how many went."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    channels = _channel_counts(model)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}   # id(node) -> what stands in its place
    removed = 0
    for cat in graph.node:
        if cat.op_type != "Concat" or _attr(cat, "axis", None) != 1 or cat.output[0] in outputs:
            continue
        parts = list(cat.input)
        if len(parts) < 2:
            continue
        convs = readers.get(cat.output[0], [])
        if not convs or any(channels.get(p, 0) < min_channels for p in parts) \
                or not all(_splittable(c, inits, cat.output[0]) for c in convs):
            continue
        for conv in convs:
            replaced[id(conv)] = _split(conv, parts, [channels[p] for p in parts], inits, graph)
        replaced[id(cat)] = []
        removed += 1
    if removed:
        nodes = [n for node in graph.node for n in replaced.get(id(node), [node])]
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in nodes for i in n.input}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return removed


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _splittable(conv: onnx.NodeProto, inits: dict, source: str) -> bool:
    return (conv.op_type == "Conv" and len(conv.input) >= 2 and conv.input[0] == source
            and conv.input[1] in inits and (len(conv.input) < 3 or conv.input[2] == "" or conv.input[2] in inits)
            and _attr(conv, "group", 1) == 1)


def _split(conv: onnx.NodeProto, parts: list[str], widths: list[int], inits: dict,
           graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    weight = numpy_helper.to_array(inits[conv.input[1]])
    bias = conv.input[2:3] if len(conv.input) > 2 and conv.input[2] else []
    nodes, total, start = [], None, 0
    for k, (part, width) in enumerate(zip(parts, widths)):
        w_name, out = f"{conv.name}/split_w{k}", f"{conv.output[0]}/split{k}"
        graph.initializer.append(numpy_helper.from_array(weight[:, start:start + width].copy(), w_name))
        start += width
        node = helper.make_node("Conv", [part, w_name] + (bias if k == 0 else []), [out], name=f"{conv.name}/split{k}")
        node.attribute.extend(conv.attribute)
        nodes.append(node)
        if total is not None:
            last = k == len(parts) - 1
            summed = conv.output[0] if last else f"{conv.output[0]}/sum{k}"
            nodes.append(helper.make_node("Add", [total, out], [summed], name=f"{conv.name}/sum{k}"))
            out = summed
        total = out
    return nodes


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Channel dimension (axis 1) of every 4-D tensor shape inference can size (none when it cannot run on the
    graph: the rewrite then leaves it as it is, and ONNX Runtime judges the model)."""
    try:
        inferred = shape_inference.infer_shapes(model)
    except (shape_inference.InferenceError, ValueError, RuntimeError, TypeError):
        return {}
    counts = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
            counts[v.name] = dims[1].dim_value
    return counts
