"""The YOLOX-Nano teacher's (Megvii YOLOX, COCO, Apache-2.0) pretrained trunk (CSPDarknet backbone + the
PAFPN's top-down path + the stride-8 head towers) as a torch module for transfer learning into the temporal
student (perception/model/network.py). As a teacher it runs through the plug-in path
(perception/decode/yolox.py with models/yolox_nano.card.yaml; perception/autolabel/teacher.py).

Input layout of the published ONNX (../shared/data/README.md): `images` [1,3,416,416] BGR 0-255, letterboxed
top-left with pad 114; output [1,3549,85] raw per anchor point of strides 8/16/32: (dx, dy, log w, log h,
objectness, 80 class scores), centre = (grid + d) * stride, size = exp(log size) * stride,
score = objectness * class score.

The student's YoloxNanoBackbone mirrors that trunk; its convolutions take the initializers of the graph
nodes that compute the stride-8 head towers, in graph order (tests/test_model_yolox.py compares the
result with ONNX Runtime on the teacher's own intermediate tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perception.errors import ModelContractError

# stride-8 tensors of the published export: the head's cls / reg towers (64 ch each)
CLS_TOWER = "input.631"
REG_TOWER = "input.663"


# -- the pretrained trunk as torch (training only) -----------------------------------------------------
def trunk_nodes(path: str | Path, outputs: Sequence[str]):
    """The ONNX nodes needed for `outputs` (graph order) and the initializers they read."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    missing = [o for o in outputs if o not in producers]
    if missing:
        raise ModelContractError(f"{path}: no tensors {missing}: not the published YOLOX-Nano export")
    need, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        node = producers.get(t)
        if node is None or id(node) in need:
            continue
        need.add(id(node))
        stack.extend(node.input)
    nodes = [n for n in model.graph.node if id(n) in need]
    return nodes, inits


# Focus's space-to-depth groups in the teacher's channel order: (row, column) offsets of top-left,
# bottom-left, top-right, bottom-right
FOCUS_GROUPS = ((0, 0), (1, 0), (0, 1), (1, 1))


def fold_focus_stem(weight: np.ndarray, std: Sequence[float]) -> np.ndarray:
    """The teacher's Focus stem (BGR 0-255 -> space-to-depth -> 3x3 convolution, weight [C, 12, 3, 3]) as the
    weight [C, 3, 6, 6] of one 6x6 stride-2 convolution (padding 2, the same bias) on RGB in units of
    255 std (network._FocusStem): focus tap (ky, kx) of group (dy, dx) reads input pixel
    (2i + 2ky + dy - 2, 2j + 2kx + dx - 2), so it is 6x6 tap (2ky + dy, 2kx + dx); BGR channel b is RGB
    channel 2 - b, scaled by 255 std."""
    c = weight.shape[0]
    if weight.shape[1:] != (12, 3, 3):
        raise ModelContractError(f"Focus stem weight {list(weight.shape)}: expected [C, 12, 3, 3]")
    scale = np.asarray(std, np.float64)[::-1] * 255.0      # per BGR channel
    w = weight.astype(np.float64).reshape(c, 4, 3, 3, 3)   # [C, group, BGR, ky, kx]
    folded = np.zeros((c, 3, 6, 6))
    for g, (dy, dx) in enumerate(FOCUS_GROUPS):
        for b in range(3):
            folded[:, 2 - b, dy::2, dx::2] = w[:, g, b] * scale[b]
    return folded.astype(np.float32)


def load_teacher_weights(backbone, path: str | Path) -> int:
    """Copy the teacher's convolutions into a YoloxNanoBackbone (perception/model/network.py), matched in
    graph order and checked shape by shape (the Focus stem folded: fold_focus_stem); returns the number of
    convolutions copied."""
    import torch

    nodes, inits = trunk_nodes(path, (CLS_TOWER, REG_TOWER))
    convs = [n for n in nodes if n.op_type == "Conv"]
    targets = backbone.pretrained_convs()
    if len(convs) != len(targets):
        raise ModelContractError(f"{path}: {len(convs)} trunk convolutions, the student's backbone has {len(targets)}")
    with torch.no_grad():
        for i, (node, conv) in enumerate(zip(convs, targets)):
            w, b = inits[node.input[1]], inits[node.input[2]]
            if i == 0:
                w = fold_focus_stem(w, backbone.input_std)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ModelContractError(f"{path}: {node.input[1]} has shape {list(w.shape)}, the student's "
                                         f"convolution needs {list(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w.copy()))
            conv.bias.copy_(torch.from_numpy(b.copy()))
    return len(convs)
