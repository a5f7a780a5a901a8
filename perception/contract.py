"""The model contract: what an exported network promises, stored as JSON in its ONNX metadata.

The node never guesses a model's classes, input size, normalisation or state layout: the exporter writes
them into `metadata_props["perception.contract"]`, and loading checks (1) the file is a sane size and
parses as ONNX, (2) the contract parses and agrees with the graph's inputs and outputs, (3) the graph is the
one the contract was written for (hash), and (4) the contract agrees with what the configuration expects.
Any mismatch is a ModelContractError naming the file and the difference. No torch here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from perception.errors import ModelContractError
from perception.preprocess.common import Normalization
from perception.yaml_io import brief, read_limited

METADATA_KEY = "perception.contract"
CONTRACT_VERSION = 1
HEAD_LAYOUT = "centernet-temporal-v1"
MAX_MODEL_BYTES = 256 * 1024 * 1024
MAX_CONTRACT_BYTES = 64 * 1024

INPUTS = ("images", "state_features", "state_ages", "dt", "fresh")
STATE_OUTPUTS = ("state_features_out", "state_ages_out")


@dataclass(frozen=True)
class HeadSpec:
    name: str
    channels: int
    units: str


def head_specs(num_classes: int) -> tuple[HeadSpec, ...]:
    """The outputs of layout HEAD_LAYOUT, each [N, channels, h, w] except velocity_valid [N]."""
    return (
        HeadSpec("heatmap", num_classes, "probability per class"),
        HeadSpec("size", 2, "box width, height in network-input pixels"),
        HeadSpec("offset", 2, "box centre x, y minus the cell index, in cells"),
        HeadSpec("velocity", 2, "box-centre velocity x, y in network-input pixels per second"),
        HeadSpec("log_depth", 1, "ln(z * depth_focal_px / fx): z = depth of the object's centre along the camera's "
                                  "optical axis (m), fx = the camera's network-input focal length (px)"),
    )


@dataclass(frozen=True)
class ModelContract:
    version: int
    model_id: str
    graph_sha256: str            # sha256 of the serialised ONNX graph (everything but the metadata)
    head_layout: str
    classes: tuple[str, ...]
    input_height: int
    input_width: int
    color_order: str             # channel order of `images`
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stride: int
    window: int                  # frames fused: current + window-1 stored
    state_shape: tuple[int, int, int, int]   # per camera: [window-1, channels, h, w]
    max_age_s: float
    depth_focal_px: float        # reference focal length F of the log_depth head (pixels)
    heads: tuple[HeadSpec, ...]

    stateless = False  # a temporal model (perception.model_card.ModelCard: a stateless plug-in detector)

    letterbox = "centre"  # alignment of the letterbox remap (calib/remap.py)

    @property
    def normalization(self) -> Normalization:
        return Normalization(self.mean, self.std)

    @property
    def feature_size(self) -> tuple[int, int]:
        return self.input_height // self.stride, self.input_width // self.stride

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str, where: str) -> "ModelContract":
        if len(text.encode()) > MAX_CONTRACT_BYTES:
            raise ModelContractError(f"{where}: contract metadata is larger than {MAX_CONTRACT_BYTES} bytes")
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelContractError(f"{where}: contract metadata is not valid JSON: {e}") from None
        except RecursionError:
            raise ModelContractError(f"{where}: contract metadata is not valid JSON: nested too deeply") from None
        if not isinstance(d, dict):
            raise ModelContractError(f"{where}: contract metadata must be a JSON object")
        if d.get("version") != CONTRACT_VERSION:
            raise ModelContractError(
                f"{where}: contract version {brief(d.get('version'))} is not supported (this build reads {CONTRACT_VERSION})")
        expected = {f.name for f in fields(ModelContract)}
        missing, unknown = sorted(expected - set(d)), sorted(set(d) - expected)
        if missing or unknown:
            raise ModelContractError(f"{where}: contract fields missing {missing}, unknown {brief(unknown)}")
        try:
            c = ModelContract(
                version=int(d["version"]), model_id=_str(d["model_id"]), graph_sha256=_str(d["graph_sha256"]),
                head_layout=_str(d["head_layout"]), classes=tuple(_str(x) for x in d["classes"]),
                input_height=_int(d["input_height"]), input_width=_int(d["input_width"]),
                color_order=_str(d["color_order"]), mean=_floats(d["mean"], 3), std=_floats(d["std"], 3),
                stride=_int(d["stride"]), window=_int(d["window"]),
                state_shape=tuple(_int(x) for x in d["state_shape"]),  # type: ignore[arg-type]
                max_age_s=float(d["max_age_s"]), depth_focal_px=float(d["depth_focal_px"]),
                heads=tuple(HeadSpec(_str(h["name"]), _int(h["channels"]), _str(h["units"])) for h in d["heads"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ModelContractError(f"{where}: malformed contract field: {brief(str(e))}") from None
        c.check_consistent(where)
        return c

    def check_consistent(self, where: str) -> None:
        """The contract's own fields agree with each other and with the layout this build decodes."""
        problems = []
        if self.head_layout != HEAD_LAYOUT:
            problems.append(f"unknown head layout {self.head_layout!r} (this build decodes {HEAD_LAYOUT!r})")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            problems.append(f"classes must be distinct and non-empty, got {list(self.classes)}")
        if self.color_order != "RGB":
            problems.append(f"color_order {self.color_order!r} is not supported (RGB)")
        if self.stride not in (8, 16) or self.input_height % self.stride or self.input_width % self.stride:
            problems.append(f"stride {self.stride} does not divide input {self.input_width}x{self.input_height}")
        if any(s <= 0 for s in self.std):
            problems.append(f"std must be positive, got {list(self.std)}")
        if self.window < 2 or len(self.state_shape) != 4 or self.state_shape[0] != self.window - 1 \
                or (self.stride in (8, 16) and tuple(self.state_shape[2:]) != self.feature_size):
            problems.append(f"state_shape {list(self.state_shape)} does not fit window {self.window} and "
                            f"feature size {list(self.feature_size)}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            problems.append(f"max_age_s must be positive, got {self.max_age_s}")
        if not (math.isfinite(self.depth_focal_px) and self.depth_focal_px > 0):
            problems.append(f"depth_focal_px must be positive, got {self.depth_focal_px}")
        if tuple(self.heads) != head_specs(len(self.classes)):
            problems.append(f"heads {[(h.name, h.channels) for h in self.heads]} are not layout {HEAD_LAYOUT!r} "
                            f"for {len(self.classes)} classes")
        if problems:
            raise ModelContractError(f"{where}: inconsistent contract: " + "; ".join(problems))

    def expected_io(self) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """Input and output names -> shapes, batch dimension as None (any number of cameras)."""
        h, w = self.feature_size
        k1 = self.window - 1
        inputs = {"images": (None, 3, self.input_height, self.input_width),
                  "state_features": (None,) + tuple(self.state_shape), "state_ages": (None, k1),
                  "dt": (None,), "fresh": (None,)}
        outputs = {s.name: (None, s.channels, h, w) for s in self.heads}
        outputs.update({"velocity_valid": (None,), "state_features_out": (None,) + tuple(self.state_shape),
                        "state_ages_out": (None, k1)})
        return inputs, outputs


@dataclass(frozen=True)
class ModelExpectation:
    """What the configuration requires of a model; None = anything is fine."""

    classes: tuple[str, ...] | None = None
    input_height: int | None = None
    input_width: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    stride: int | None = None
    window: int | None = None


def check_expectation(contract: ModelContract, expected: ModelExpectation, where: str) -> None:
    """Raise one ModelContractError listing every field where the model differs from the configuration."""
    diffs = []
    for f in fields(ModelExpectation):
        want = getattr(expected, f.name)
        if want is None:
            continue
        have = getattr(contract, f.name)
        if f.name in ("mean", "std"):
            same = len(want) == len(have) and all(abs(float(a) - float(b)) <= 1e-6 for a, b in zip(want, have))
        else:
            same = tuple(want) == tuple(have) if isinstance(want, (tuple, list)) else want == have
        if not same:
            diffs.append(f"{f.name}: model has {_show(have)}, configuration expects {_show(want)}")
    if diffs:
        raise ModelContractError(f"{where}: model {contract.model_id} does not match the configuration: "
                                 + "; ".join(diffs))


def graph_sha256(model) -> str:  # model: onnx.ModelProto
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def embed_contract(model, contract: ModelContract) -> None:
    """Write `contract` into an onnx.ModelProto's metadata (replacing an older one)."""
    set_metadata(model, METADATA_KEY, contract.to_json())


def set_metadata(model, key: str, value: str) -> None:
    """Set the metadata entry `key` of an onnx.ModelProto to `value` (replacing an older one)."""
    props = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    contract: ModelContract
    data: bytes          # the validated file contents: hand these (not the path) to the runtime


def save_model(proto, out: str | os.PathLike) -> None:
    """Check an ONNX model (onnx.checker) and write it as one file (no external data), atomically."""
    import onnx

    onnx.checker.check_model(proto)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
    os.replace(tmp, out)


def load_model(path: str | os.PathLike, expected: ModelExpectation | None = None,
               max_bytes: int = MAX_MODEL_BYTES) -> LoadedModel:
    """Read an untrusted ONNX file: size limit, protobuf parse, contract, graph I/O, hash, expectation."""
    path = Path(path)
    where = str(path)
    model, data = read_onnx(path, max_bytes)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelContractError(f"{where}: no '{METADATA_KEY}' metadata: not exported by `perception export`")
    contract = ModelContract.from_json(props[METADATA_KEY], where)
    _check_graph_io(model, contract, where)
    actual = graph_sha256(model)
    if actual != contract.graph_sha256:
        raise ModelContractError(f"{where}: graph hash {actual[:16]}... differs from the contract's "
                                 f"{contract.graph_sha256[:16]}... (file edited or corrupted)")
    if expected is not None:
        check_expectation(contract, expected, where)
    return LoadedModel(path, contract, data)


def read_onnx(path: str | os.PathLike, max_bytes: int = MAX_MODEL_BYTES) -> tuple:
    """(onnx.ModelProto, file bytes) of an untrusted single-file ONNX model: a regular file of at most
    `max_bytes` that parses, has a graph and keeps its weights inside. Any problem: ModelContractError."""
    import onnx
    from google.protobuf.message import DecodeError

    where = str(path)
    data = read_limited(path, max_bytes, ModelContractError, "model file")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelContractError(f"{where}: not a parseable ONNX model: {e}") from None
    if not model.graph.node:
        raise ModelContractError(f"{where}: not an ONNX model (empty graph)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise ModelContractError(f"{where}: weights are stored in an external file; export a single-file model")
    return model, data


def _check_graph_io(model, contract: ModelContract, where: str) -> None:
    init_names = {t.name for t in model.graph.initializer}
    graph_in = {v.name: value_shape(v) for v in model.graph.input if v.name not in init_names}
    graph_out = {v.name: value_shape(v) for v in model.graph.output}
    want_in, want_out = contract.expected_io()
    problems = []
    for kind, want, have in (("input", want_in, graph_in), ("output", want_out, graph_out)):
        for name, shape in want.items():
            if name not in have:
                what = " (the model has no temporal state)" if name.startswith("state_") else ""
                problems.append(f"missing {kind} {name!r}{what}")
            elif not _shape_matches(have[name], shape):
                problems.append(f"{kind} {name!r} has shape {_show(have[name])}, contract says {_show(shape)}")
        extra = sorted(set(have) - set(want))
        if extra:
            problems.append(f"unexpected {kind}s {extra}")
    for v in list(model.graph.input) + list(model.graph.output):
        if v.name in want_in or v.name in want_out:
            if v.type.tensor_type.elem_type != 1:  # onnx.TensorProto.FLOAT
                problems.append(f"{v.name!r} is not float32")
    if problems:
        raise ModelContractError(f"{where}: graph does not match its contract: " + "; ".join(problems))


def value_shape(value_info) -> tuple:
    """The shape of an ONNX graph input or output, None for a symbolic dimension."""
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _shape_matches(have: tuple, want: tuple) -> bool:
    return len(have) == len(want) and all(w is None or h == w for h, w in zip(have, want))


def _show(v: object) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join("N" if x is None else repr(x) if isinstance(x, str) else str(x) for x in v) + "]"
    return repr(v)


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {brief(v)}")
    return v


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected an integer, got {brief(v)}")
    return v


def _floats(v: object, n: int) -> tuple:
    if not isinstance(v, list) or len(v) != n:
        raise TypeError(f"expected {n} numbers, got {brief(v)}")
    out = tuple(float(x) for x in v)
    if not all(math.isfinite(x) for x in out):
        raise ValueError(f"expected finite numbers, got {brief(v)}")
    return out
