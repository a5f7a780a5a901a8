"""Export a trained network to a single-file ONNX model carrying its contract, and check parity."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from perception.contract import INPUTS, ModelContract, embed_contract, graph_sha256
from perception.model.config import ModelConfig
from perception.model.network import OUTPUT_NAMES, TemporalCenterNet

OPSET = 18
MAX_CAMERAS = 16


def example_inputs(cfg: ModelConfig, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, cfg.input_height, cfg.input_width, generator=g)
    features = torch.randn((n,) + cfg.state_shape, generator=g).abs()
    ages = torch.tensor([[0.05 * (k + 1) for k in range(cfg.window - 1)]] * n)
    return images, features, ages, torch.full((n,), 0.05), torch.ones(n)


def export_onnx(model: TemporalCenterNet, out: str | os.PathLike, name: str) -> ModelContract:
    """Write `model` (eval mode) to `out` as one ONNX file with a dynamic camera batch and its contract."""
    import onnx

    model = model.eval()
    cams = torch.export.Dim("cameras", min=1, max=MAX_CAMERAS)
    dynamic = {k: {0: cams} for k in INPUTS}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, example_inputs(model.cfg, 2), input_names=list(INPUTS), output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    proto = program.model_proto
    _name_batch_dims(proto)
    digest = graph_sha256(proto)
    contract = model.cfg.contract(f"{name}-{digest[:12]}", digest)
    embed_contract(proto, contract)
    proto.producer_name = "perception export"
    onnx.checker.check_model(proto)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
    os.replace(tmp, out)
    return contract


def _name_batch_dims(proto) -> None:
    """Call the camera batch dimension `cameras` on every graph input and output."""
    for v in list(proto.graph.input) + list(proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "cameras"


def max_parity_error(model: TemporalCenterNet, onnx_path: str | os.PathLike, images: np.ndarray,
                     t_ns: np.ndarray) -> dict[str, float]:
    """Stream `images` [T,N,3,H,W] (times `t_ns` [T]) through torch and ONNX Runtime; max |diff| per output."""
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.engine.torch import TorchEngine

    engines = [TorchEngine(model), OnnxRuntimeEngine(onnx_path)]
    states = [e.initial_state(images.shape[1]) for e in engines]
    worst: dict[str, float] = {}
    for step in range(images.shape[0]):
        results = []
        for i, engine in enumerate(engines):
            heads, states[i] = engine.run(images[step], np.full(images.shape[1], t_ns[step]), states[i])
            results.append(heads.as_dict() | {"state_features": states[i].features, "state_ages": states[i].ages})
        for k in results[0]:
            d = float(np.max(np.abs(results[0][k] - results[1][k]))) if results[0][k].size else 0.0
            worst[k] = max(worst.get(k, 0.0), d)
    return worst
