"""Model cards: how the node runs a standard single-frame detector it did not export (e.g. YOLOX).

A plug-in ONNX model has no `perception.contract`; a small card says what it is. The card is a YAML file
next to the model (`yolox_nano.onnx` + `yolox_nano.card.yaml`), or the same fields as JSON in the ONNX
metadata under `perception.card`. It is validated at load like the contract (perception/contract.py):
every problem is a ModelContractError naming the file and the field.

    version: 1
    model_id: yolox-nano-coco
    format: yolox-raw            # [1, anchors, 5 + classes], strides below, decoded in the node
                                 # or `decoded`: outputs boxes [1, K, 4] (x0 y0 x1 y1, network pixels,
                                 # pixel edges at integers), scores [1, K], labels [1, K] (model class ids)
    sha256: e8af...              # of the ONNX file (YAML card) / of the serialised graph (embedded card)
    input: {name: images, width: 416, height: 416, color_order: BGR,
            value_range: 255,    # pixels scaled to 0..value_range (255: raw 0-255, 1: 0-1), then
            mean: [0, 0, 0], std: [1, 1, 1],   # (value - mean) / std, in input channel order
            pad_value: 114,      # letterbox bars in source pixel units (0..255); null: the mean (0.0 out)
            letterbox: top-left} # or `centre`
    output: {name: output, strides: [8, 16, 32]}              # yolox-raw
    # output: {boxes: boxes, scores: scores, labels: labels}  # decoded
    num_classes: 80
    class_map: {0: pedestrian, 1: cyclist, 2: car, 3: cyclist, 5: truck, 7: truck}  # others dropped
    merge_riders: true           # optional (default false): a pedestrian box riding a cyclist box (a COCO
                                 # person on a bicycle / motorcycle) becomes one cyclist box
                                 # (perception/decode/riders.py); needs both classes in class_map

Public API (what `perception autolabel` and other callers use):

    loaded = load_any_model(path)            # LoadedModel with .contract: ModelContract or ModelCard
    card = read_card(path)                   # the card of a plug-in model (side YAML or metadata)

`ModelCard` offers the fields the node reads from a contract (model_id, classes = the project classes
its detections use, input size, mean, std) so the node treats both alike; `stateless` tells them apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calib.remap import ALIGNMENTS
from perception.contract import (
    MAX_MODEL_BYTES, METADATA_KEY, LoadedModel, graph_sha256, load_model, read_onnx, set_metadata, value_shape,
)
from perception.errors import ModelContractError
from perception.labels import CLASSES, CLASS_INDEX
from perception.node.defaults import DEMO_MODEL
from perception.preprocess.common import COLOR_ORDERS, VALUE_RANGES, Normalization
from perception.yaml_io import brief, decode_utf8, parse_yaml, read_limited, show_path

CARD_METADATA_KEY = "perception.card"
CARD_VERSION = 1
CARD_SUFFIX = ".card.yaml"
MAX_CARD_BYTES = 64 * 1024
BUNDLED_CARDS = DEMO_MODEL.parent  # models/ of the checkout, or the installed share/perception/models
FORMATS = ("yolox-raw", "decoded")

_TOP = {"version", "model_id", "format", "sha256", "input", "output", "num_classes", "class_map"}
_TOP_OPTIONAL = {"merge_riders"}
_INPUT = {"name", "width", "height", "color_order", "value_range", "mean", "std", "pad_value", "letterbox"}
_OUTPUT = {"yolox-raw": {"name", "strides"}, "decoded": {"boxes", "scores", "labels"}}


@dataclass(frozen=True)
class ModelCard:
    model_id: str
    format: str                          # one of FORMATS
    sha256: str
    input_name: str
    input_width: int
    input_height: int
    color_order: str                     # channel order of the input tensor
    value_range: float                   # 1.0 or 255.0
    mean: tuple[float, float, float]     # in input channel order, in 0..value_range units
    std: tuple[float, float, float]
    pad_value: float | None              # letterbox bars, source pixel units; None = the mean
    letterbox: str                       # one of ALIGNMENTS
    outputs: dict[str, str]              # role -> graph output name ("raw" | "boxes", "scores", "labels")
    strides: tuple[int, ...]             # yolox-raw only
    num_classes: int
    class_map: dict[int, int]            # model class id -> index into perception.labels.CLASSES
    merge_riders: bool = False           # a pedestrian riding a cyclist box: one cyclist (decode/riders.py)

    stateless = True

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes of the Detections the node publishes (class_map targets)."""
        return CLASSES

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std, self.value_range, self.color_order, self.pad_value)

    @property
    def num_anchors(self) -> int:
        return sum((self.input_height // s) * (self.input_width // s) for s in self.strides)

    def expected_io(self) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """Input and output names -> shapes, as ModelContract.expected_io (batch 1: one camera per run)."""
        return {self.input_name: (1, 3, self.input_height, self.input_width)}, self.expected_outputs()

    def expected_outputs(self) -> dict[str, tuple]:
        """Graph output name -> shape (None = any size)."""
        if self.format == "yolox-raw":
            return {self.outputs["raw"]: (1, self.num_anchors, 5 + self.num_classes)}
        return {self.outputs["boxes"]: (1, None, 4), self.outputs["scores"]: (1, None),
                self.outputs["labels"]: (1, None)}

    def to_dict(self) -> dict:
        """The card's fields as read by from_dict (YAML / the JSON of the `perception.card` metadata)."""
        if self.format == "yolox-raw":
            output: dict = {"name": self.outputs["raw"], "strides": list(self.strides)}
        else:
            output = dict(self.outputs)
        return {"version": CARD_VERSION, "model_id": self.model_id, "format": self.format, "sha256": self.sha256,
                "input": {"name": self.input_name, "width": self.input_width, "height": self.input_height,
                          "color_order": self.color_order, "value_range": self.value_range, "mean": list(self.mean),
                          "std": list(self.std), "pad_value": self.pad_value, "letterbox": self.letterbox},
                "output": output, "num_classes": self.num_classes,
                "class_map": {str(k): CLASSES[v] for k, v in sorted(self.class_map.items())},
                "merge_riders": self.merge_riders}

    @staticmethod
    def from_dict(d: Any, where: str) -> "ModelCard":
        if not isinstance(d, dict):
            raise ModelContractError(f"{where}: a model card must be a mapping, got {brief(d)}")
        _keys(d, _TOP, where, "card", _TOP_OPTIONAL)
        if d["version"] != CARD_VERSION:
            raise ModelContractError(f"{where}: card version {brief(d['version'])} is not supported "
                                     f"(this build reads {CARD_VERSION})")
        fmt = _choice(d["format"], FORMATS, "format", where)
        inp, out = d["input"], d["output"]
        _keys(inp, _INPUT, where, "input")
        _keys(out, _OUTPUT[fmt], where, "output")
        width, height = _int(inp["width"], "input.width", where), _int(inp["height"], "input.height", where)
        strides: tuple[int, ...] = ()
        if fmt == "yolox-raw":
            strides = _ints(out["strides"], "output.strides", where)
            bad = [s for s in strides if width % s or height % s]
            if not strides or bad:
                raise ModelContractError(f"{where}: field 'output.strides': {list(strides)} must be non-empty "
                                         f"and divide the input {width}x{height}")
            outputs = {"raw": _str(out["name"], "output.name", where)}
        else:
            outputs = {k: _str(out[k], f"output.{k}", where) for k in ("boxes", "scores", "labels")}
        value_range = _float(inp["value_range"], "input.value_range", where)
        if value_range not in VALUE_RANGES:
            raise ModelContractError(f"{where}: field 'input.value_range': must be 1 or 255, got {brief(value_range)}")
        std = _floats3(inp["std"], "input.std", where)
        if not all(s > 0 for s in std):
            raise ModelContractError(f"{where}: field 'input.std': must be > 0 on every channel, got {list(std)}")
        pad = None if inp["pad_value"] is None else _float(inp["pad_value"], "input.pad_value", where)
        if pad is not None and not 0.0 <= pad <= 255.0:
            raise ModelContractError(f"{where}: field 'input.pad_value': must be in 0..255 or null, got {pad}")
        num_classes = _int(d["num_classes"], "num_classes", where)
        class_map = _class_map(d["class_map"], num_classes, where)
        merge_riders = d.get("merge_riders", False)
        if not isinstance(merge_riders, bool):
            raise ModelContractError(f"{where}: field 'merge_riders': expected true or false, got {brief(merge_riders)}")
        if merge_riders and not {CLASS_INDEX["pedestrian"], CLASS_INDEX["cyclist"]} <= set(class_map.values()):
            raise ModelContractError(f"{where}: field 'merge_riders': needs classes mapped to both pedestrian and "
                                     f"cyclist in 'class_map'")
        return ModelCard(
            model_id=_str(d["model_id"], "model_id", where), format=fmt, sha256=_sha(d["sha256"], where),
            input_name=_str(inp["name"], "input.name", where), input_width=width, input_height=height,
            color_order=_choice(inp["color_order"], COLOR_ORDERS, "input.color_order", where),
            value_range=value_range, mean=_floats3(inp["mean"], "input.mean", where), std=std, pad_value=pad,
            letterbox=_choice(inp["letterbox"], ALIGNMENTS, "input.letterbox", where), outputs=outputs,
            strides=strides, num_classes=num_classes, class_map=class_map, merge_riders=merge_riders)


def embed_card(model, card: ModelCard) -> None:
    """Write `card` (its sha256 = the graph hash of `model`, an onnx.ModelProto) into the model's metadata."""
    set_metadata(model, CARD_METADATA_KEY, json.dumps(card.to_dict(), sort_keys=True))


def card_path(model_path: str | os.PathLike) -> Path:
    """Where the side card of `model.onnx` lives: `model.card.yaml`."""
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".onnx") + CARD_SUFFIX)


def read_card(path: str | os.PathLike, card: str | os.PathLike | None = None,
              max_bytes: int = MAX_MODEL_BYTES) -> tuple[ModelCard, bytes]:
    """The card of a plug-in model and the validated file contents (hand these to the runtime). The card:
    `card` when given, else the model's `perception.card` metadata, else `card_path(path)` next to it,
    else a bundled card (BUNDLED_CARDS, e.g. models/yolox_nano.card.yaml) whose sha256 is the file's."""
    model, data = read_onnx(path, max_bytes)
    where = str(path)
    props = {p.key: p.value for p in model.metadata_props}
    side = Path(card) if card is not None else card_path(path)
    if card is None and CARD_METADATA_KEY not in props and not side.is_file():
        side = bundled_card(hashlib.sha256(data).hexdigest()) or side
    if card is None and CARD_METADATA_KEY in props:
        text, card_where, digest = props[CARD_METADATA_KEY], f"{where} (metadata {CARD_METADATA_KEY})", graph_sha256(model)
        if len(text.encode()) > MAX_CARD_BYTES:
            raise ModelContractError(f"{card_where}: card is larger than {MAX_CARD_BYTES} bytes")
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise ModelContractError(f"{card_where}: card is not valid JSON: {brief(str(e))}") from None
    elif card is not None or side.is_file():
        card_where, digest = show_path(side), hashlib.sha256(data).hexdigest()
        raw = parse_yaml(decode_utf8(read_limited(side, MAX_CARD_BYTES, ModelContractError, "model card"),
                                     card_where, ModelContractError), card_where, ModelContractError)
    else:
        raise ModelContractError(f"{where}: no '{METADATA_KEY}' or '{CARD_METADATA_KEY}' metadata, no model card "
                                 f"{side.name} next to it and no bundled card for its sha256: the node cannot "
                                 f"tell how to run it (docs/plugin_models.md)")
    card = ModelCard.from_dict(raw, card_where)
    if card.sha256 != digest:
        raise ModelContractError(f"{card_where}: sha256 {card.sha256[:16]}... is not the model's {digest[:16]}... "
                                 f"(the card was written for another file)")
    _check_graph_io(model, card, where)
    return card, data


def bundled_card(sha256: str) -> Path | None:
    """The card shipped with this project (BUNDLED_CARDS) for the ONNX file of this sha256, if any."""
    for path in sorted(BUNDLED_CARDS.glob("*" + CARD_SUFFIX)):
        try:
            raw = parse_yaml(decode_utf8(read_limited(path, MAX_CARD_BYTES, ModelContractError, "model card"),
                                         str(path), ModelContractError), str(path), ModelContractError)
        except ModelContractError:
            continue  # a broken bundled card is reported when it is used explicitly
        if isinstance(raw, dict) and raw.get("sha256") == sha256:
            return path
    return None


def model_kind(path: str | os.PathLike, max_bytes: int = MAX_MODEL_BYTES) -> str:
    """"contract" (exported, perception/contract.py) or "card" (a plug-in detector), from the metadata."""
    model, _ = read_onnx(path, max_bytes)
    return "contract" if any(p.key == METADATA_KEY for p in model.metadata_props) else "card"


def load_any_model(path: str | os.PathLike, card: str | os.PathLike | None = None,
                   max_bytes: int = MAX_MODEL_BYTES) -> LoadedModel:
    """A model the node can run: exported with a contract (perception/contract.py) or a plug-in with a card
    (`card`, or found as read_card finds it). `.contract` is a ModelContract or a ModelCard (`stateless`)."""
    if card is None and model_kind(path, max_bytes) == "contract":
        return load_model(path, max_bytes=max_bytes)
    found, data = read_card(path, card, max_bytes)
    return LoadedModel(Path(path), found, data)  # type: ignore[arg-type]


def _check_graph_io(model, card: ModelCard, where: str) -> None:
    init = {t.name for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in init}
    outputs = {v.name: v for v in model.graph.output}
    problems = []
    want_in = card.expected_io()[0][card.input_name]
    if set(inputs) != {card.input_name}:
        problems.append(f"inputs {sorted(inputs)}, card says one input {card.input_name!r}")
    elif not _fits(value_shape(inputs[card.input_name]), want_in, batch_free=True):
        problems.append(f"input {card.input_name!r} has shape {_show(value_shape(inputs[card.input_name]))}, "
                        f"card says {_show(want_in)}")
    for name, want in card.expected_outputs().items():
        if name not in outputs:
            problems.append(f"missing output {name!r} (outputs: {sorted(outputs)})")
        elif not _fits(value_shape(outputs[name]), want, batch_free=True):
            problems.append(f"output {name!r} has shape {_show(value_shape(outputs[name]))}, card says {_show(want)}")
    if problems:
        raise ModelContractError(f"{where}: graph does not match its model card: " + "; ".join(problems))


def _fits(have: tuple, want: tuple, batch_free: bool) -> bool:
    """Shapes agree where both are known; a symbolic (None) dimension fits anything."""
    return len(have) == len(want) and all(
        h is None or w is None or h == w or (batch_free and i == 0) for i, (h, w) in enumerate(zip(have, want)))


def _show(shape: tuple) -> str:
    return "[" + ", ".join("N" if x is None else str(x) for x in shape) + "]"


def _keys(d: Any, expected: set[str], where: str, what: str, optional: set[str] = frozenset()) -> None:
    if not isinstance(d, dict):
        raise ModelContractError(f"{where}: field {what!r}: expected a mapping, got {brief(d)}")
    missing, unknown = sorted(expected - set(d)), sorted(map(str, set(d) - expected - optional))
    if missing or unknown:
        raise ModelContractError(f"{where}: {what} fields missing {missing}, unknown {brief(unknown)}")


def _str(v: Any, field: str, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ModelContractError(f"{where}: field {field!r}: expected a non-empty string, got {brief(v)}")
    return v


def _choice(v: Any, allowed: tuple[str, ...], field: str, where: str) -> str:
    if v not in allowed:
        raise ModelContractError(f"{where}: field {field!r}: must be one of {list(allowed)}, got {brief(v)}")
    return str(v)


def _int(v: Any, field: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 1 << 16:
        raise ModelContractError(f"{where}: field {field!r}: expected a positive integer, got {brief(v)}")
    return v


def _ints(v: Any, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(v, list):
        raise ModelContractError(f"{where}: field {field!r}: expected a list of integers, got {brief(v)}")
    return tuple(_int(x, field, where) for x in v)


def _float(v: Any, field: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        raise ModelContractError(f"{where}: field {field!r}: expected a finite number, got {brief(v)}")
    return float(v)


def _floats3(v: Any, field: str, where: str) -> tuple[float, float, float]:
    if not isinstance(v, list) or len(v) != 3:
        raise ModelContractError(f"{where}: field {field!r}: expected 3 numbers, got {brief(v)}")
    return tuple(_float(x, field, where) for x in v)  # type: ignore[return-value]


def _sha(v: Any, where: str) -> str:
    if not isinstance(v, str) or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ModelContractError(f"{where}: field 'sha256': expected 64 lowercase hex digits, got {brief(v)}")
    return v


def _class_map(v: Any, num_classes: int, where: str) -> dict[int, int]:
    if not isinstance(v, dict) or not v:
        raise ModelContractError(f"{where}: field 'class_map': expected a non-empty mapping of model class id "
                                 f"-> one of {list(CLASSES)}, got {brief(v)}")
    out = {}
    for k, name in v.items():
        key = int(k) if isinstance(k, str) and k.isdigit() else k  # JSON object keys are strings
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < num_classes:
            raise ModelContractError(f"{where}: field 'class_map': key {brief(k)} is not a class id in "
                                     f"0..{num_classes - 1}")
        if name not in CLASS_INDEX:
            raise ModelContractError(f"{where}: field 'class_map': class {key} maps to {brief(name)}, not one of "
                                     f"{list(CLASSES)}")
        out[key] = CLASS_INDEX[name]
    return out
