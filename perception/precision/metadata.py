"""What a precision transform records in the ONNX it writes, next to the model contract.

A converted model is a new graph: its contract is re-embedded with the new graph hash (so `load_model`
keeps verifying it) and a model id that names the precision. A second metadata entry,
`perception.precision`, says how it was made: precision, calibration method and data, and the hash of
the float32 graph it came from (engine caches and reports use it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from perception.contract import METADATA_KEY, ModelContract, embed_contract, graph_sha256, save_model
from perception.errors import ModelContractError
from perception.model_card import CARD_METADATA_KEY, ModelCard, embed_card

PRECISION_KEY = "perception.precision"
PRECISIONS = ("fp32", "fp16", "int8")
MAX_PRECISION_BYTES = 64 * 1024


@dataclass(frozen=True)
class PrecisionInfo:
    precision: str                       # one of PRECISIONS
    source_graph_sha256: str             # the float32 graph this one was derived from
    method: str | None = None            # int8: calibration method
    details: dict = field(default_factory=dict)  # JSON-able: calibration drives, frames, excluded nodes...

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelContractError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def id_suffix(self) -> str:
        """What the converted model's id appends: the precision, the calibration method and, for mixed INT8,
        the multiply-accumulate threshold (`int8-percentile-k256`), so full and mixed INT8 copies differ."""
        min_macs = self.details.get("min_macs")
        parts = [self.precision] + ([self.method] if self.method else []) + ([f"k{min_macs}"] if min_macs else [])
        return "-".join(parts)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str, where: str) -> "PrecisionInfo":
        if len(text.encode()) > MAX_PRECISION_BYTES:
            raise ModelContractError(f"{where}: '{PRECISION_KEY}' metadata is larger than {MAX_PRECISION_BYTES} bytes")
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or set(d) != {"precision", "source_graph_sha256", "method", "details"}:
                raise ValueError(f"expected the fields precision, source_graph_sha256, method, details, got {d!r}")
            if not isinstance(d["details"], dict):
                raise ValueError("details must be an object")
            return PrecisionInfo(str(d["precision"]), str(d["source_graph_sha256"]),
                                 None if d["method"] is None else str(d["method"]), d["details"])
        except (ValueError, TypeError) as e:
            raise ModelContractError(f"{where}: malformed '{PRECISION_KEY}' metadata: {e}") from None


def contract_of(model) -> ModelContract:
    """The contract embedded in an onnx.ModelProto (not re-verified against the graph)."""
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise ModelContractError(f"model has no '{METADATA_KEY}' metadata: not exported by `perception export`")
    return ModelContract.from_json(props[METADATA_KEY], "model")


def precision_of(model, where: str = "model") -> PrecisionInfo:
    """How `model` (onnx.ModelProto) was made; a model without the entry is the exported float32 graph."""
    props = {p.key: p.value for p in model.metadata_props}
    if PRECISION_KEY in props:
        return PrecisionInfo.from_json(props[PRECISION_KEY], where)
    return PrecisionInfo("fp32", graph_sha256(model))


def read_precision(path: str | os.PathLike) -> PrecisionInfo:
    """`precision_of` for a file, reading only the model's metadata (the file is not re-verified here:
    `perception.contract.load_model` does that)."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelContractError(f"{path}: cannot read ONNX model: {e}") from None
    return precision_of(model, str(path))


def finish_converted(model, source: ModelContract | ModelCard, info: PrecisionInfo,
                     out: str | os.PathLike) -> ModelContract | ModelCard:
    """Re-embed the contract (or a plug-in detector's model card) for the new graph, record `info`, check
    and write `model` to `out` atomically."""
    props = [p for p in model.metadata_props if p.key not in (METADATA_KEY, CARD_METADATA_KEY, PRECISION_KEY)]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    digest = graph_sha256(model)
    base_id = source.model_id.split("+", 1)[0]
    model_id = f"{base_id}+{info.id_suffix()}"
    if source.stateless:
        contract = dataclasses.replace(source, model_id=model_id, sha256=digest)
        embed_card(model, contract)
    else:
        contract = dataclasses.replace(source, model_id=model_id, graph_sha256=digest)
        embed_contract(model, contract)
    entry = model.metadata_props.add()
    entry.key, entry.value = PRECISION_KEY, info.to_json()
    save_model(model, out)
    return contract
