"""The YOLOX-Nano teacher (Megvii YOLOX, COCO, Apache-2.0): its documented decode as an autolabel teacher,
and its pretrained trunk (CSPDarknet backbone + the PAFPN's top-down path + the stride-8 head towers) as a
torch module for transfer learning into the temporal student (perception/model/network.py).

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

from perception.detections import Detections
from perception.errors import ModelContractError
from perception.frame import Frame
from perception.labels import CLASS_INDEX, CLASSES

TEACHER_SIZE = 416
TEACHER_PAD = 114.0
STRIDES = (8, 16, 32)
# COCO id -> project class (everything else is dropped)
COCO_MAP = {0: "pedestrian", 1: "cyclist", 2: "car", 3: "cyclist", 5: "truck", 7: "truck"}
# stride-8 tensors of the published export: the head's cls / reg towers (64 ch each)
CLS_TOWER = "input.631"
REG_TOWER = "input.663"


def decode_raw(raw: np.ndarray, size: int = TEACHER_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """raw [A,85] -> boxes [A,4] (x0 y0 x1 y1, network pixels) and COCO scores [A,80] (obj * cls)."""
    grids, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = np.mgrid[0:n, 0:n]
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full(n * n, s))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(strides).astype(np.float32)[:, None]
    centre = (grid + raw[:, :2]) * stride
    wh = np.exp(raw[:, 2:4]) * stride
    return np.concatenate([centre - wh / 2, centre + wh / 2], 1), raw[:, 4:5] * raw[:, 5:]


class YoloxTeacher:
    """autolabel Teacher (perception/autolabel/teacher.py): YOLOX-Nano through ONNX Runtime, COCO classes
    mapped onto the project's, class-wise NMS (OpenCV)."""

    def __init__(self, path: str | Path, score_threshold: float, nms_iou: float = 0.45,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        if list(inp.shape) != [1, 3, TEACHER_SIZE, TEACHER_SIZE]:
            raise ModelContractError(f"{path}: input {inp.name} has shape {inp.shape}, a YOLOX-Nano 416 export "
                                     f"has [1, 3, {TEACHER_SIZE}, {TEACHER_SIZE}]")
        self.input_name = inp.name
        self.teacher_id = "yolox-nano-coco"
        self.classes = CLASSES
        self.score_threshold, self.nms_iou = score_threshold, nms_iou
        ids = sorted(COCO_MAP)
        self._coco = np.array(ids)
        self._target = np.array([CLASS_INDEX[COCO_MAP[i]] for i in ids])

    def detect_bgr(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BGR image -> boxes [N,4] (image pixels), project class [N], score [N]."""
        import cv2

        h, w = image.shape[:2]
        scale = min(TEACHER_SIZE / w, TEACHER_SIZE / h)
        resized = cv2.resize(image, (int(round(w * scale)), int(round(h * scale))), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((TEACHER_SIZE, TEACHER_SIZE, 3), TEACHER_PAD, np.float32)
        canvas[:resized.shape[0], :resized.shape[1]] = resized
        raw = self.session.run(None, {self.input_name: canvas.transpose(2, 0, 1)[None]})[0][0]
        boxes, scores = decode_raw(raw)
        mapped = scores[:, self._coco]                                      # [A,6]
        best = mapped.argmax(1)
        score = mapped[np.arange(len(best)), best]
        keep = score >= self.score_threshold
        boxes, cls, score = boxes[keep] / scale, self._target[best[keep]], score[keep]
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
        chosen = []
        for c in np.unique(cls):
            idx = np.flatnonzero(cls == c)
            xywh = np.concatenate([boxes[idx, :2], boxes[idx, 2:] - boxes[idx, :2]], 1)
            k = cv2.dnn.NMSBoxes(xywh.tolist(), score[idx].tolist(), self.score_threshold, self.nms_iou)
            chosen.extend(idx[np.asarray(k, int).reshape(-1)])
        chosen = np.array(sorted(chosen), int)
        return boxes[chosen], cls[chosen], score[chosen]

    def detect(self, camera: int, t_ns: int, frame: Frame) -> Detections:
        from perception.io.drive_images import frame_to_bgr

        boxes, cls, score = self.detect_bgr(frame_to_bgr(frame))
        n = len(score)
        return Detections(np.full(n, camera, np.int32), cls.astype(np.int32), score.astype(np.float32),
                          boxes.astype(np.float32), np.full(n, np.nan, np.float32), np.zeros((n, 2), np.float32))


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


def load_teacher_weights(backbone, path: str | Path) -> int:
    """Copy the teacher's convolutions into a YoloxNanoBackbone (perception/model/network.py), matched in
    graph order and checked shape by shape; returns the number of convolutions copied."""
    import torch

    nodes, inits = trunk_nodes(path, (CLS_TOWER, REG_TOWER))
    convs = [n for n in nodes if n.op_type == "Conv"]
    targets = backbone.pretrained_convs()
    if len(convs) != len(targets):
        raise ModelContractError(f"{path}: {len(convs)} trunk convolutions, the student's backbone has {len(targets)}")
    with torch.no_grad():
        for node, conv in zip(convs, targets):
            w, b = inits[node.input[1]], inits[node.input[2]]
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ModelContractError(f"{path}: {node.input[1]} has shape {list(w.shape)}, the student's "
                                         f"convolution needs {list(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(w.copy()))
            conv.bias.copy_(torch.from_numpy(b.copy()))
    return len(convs)
