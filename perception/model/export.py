"""Export a trained network to a single-file ONNX model carrying its contract, and check parity."""

from __future__ import annotations

import json
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

from perception.contract import INPUTS, ModelContract, embed_contract, graph_sha256, save_model, set_metadata
from perception.model.config import ModelConfig
from perception.model.network import OUTPUT_NAMES, TemporalCenterNet

if TYPE_CHECKING:
    from perception.engine.torch import TorchEngine

OPSET = 18
# the network's architecture (ModelConfig), next to the contract: what rebuilds it in torch from the file
# (perception/engine/torch.py, for GPU machines without TensorRT or ONNX Runtime GPU)
MODEL_CONFIG_KEY = "perception.model_config"
MAX_CAMERAS = 16


def example_inputs(cfg: ModelConfig, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, cfg.input_height, cfg.input_width, generator=g)
    features = torch.randn((n,) + cfg.state_shape, generator=g).abs()
    ages = torch.tensor([[0.05 * (k + 1) for k in range(cfg.window - 1)]] * n)
    return images, features, ages, torch.full((n,), 0.05), torch.ones(n)


def export_onnx(model: TemporalCenterNet, out: str | os.PathLike, name: str) -> ModelContract:
    """Write `model` (eval mode) to `out` as one ONNX file with a dynamic camera batch and its contract."""
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
    set_metadata(proto, MODEL_CONFIG_KEY, json.dumps(model.cfg.to_dict(), sort_keys=True))
    proto.producer_name = "perception export"
    save_model(proto, out)
    return contract


def _name_batch_dims(proto) -> None:
    """Call the camera batch dimension `cameras` on every graph input and output."""
    for v in list(proto.graph.input) + list(proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "cameras"


def parity_inputs(cfg: ModelConfig, cameras: int, drive: str | os.PathLike | None = None,
                  steps: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """[steps, cameras, 3, H, W] inputs and their [steps] times (100 ms apart, one dropped frame): the first
    frames of `drive` preprocessed like the node, or fixed smooth random images."""
    t_ns = np.cumsum([0] + [100_000_000] * (steps - 1)) + np.array([0] * (steps - 1) + [100_000_000])
    if drive is None:
        import cv2
        rng = np.random.default_rng(0)
        small = rng.uniform(0, 255, (steps, cameras, cfg.input_height // 8, cfg.input_width // 8, 3)).astype(np.float32)
        images = np.stack([[cv2.resize(im, (cfg.input_width, cfg.input_height)) for im in step] for step in small])
        images = (images / 255.0 - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
        return np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3), dtype=np.float32), t_ns
    from calib.remap import build_remap
    from perception.preprocess import FastPreprocessor, Normalization
    from perception.io.drive import open_drive

    reader = open_drive(drive)
    try:
        names = reader.cameras[:cameras]
        pre = FastPreprocessor([build_remap(reader.rig[c], cfg.input_width, cfg.input_height) for c in names],
                               Normalization(cfg.mean, cfg.std))
        latest: dict[str, object] = {}
        batches = []
        for cf in reader.frames(names):
            latest[cf.camera] = cf.frame
            if len(latest) == len(names):
                batches.append(pre.run([latest[c] for c in names]).copy())
                latest = {}
                if len(batches) == steps:
                    break
    finally:
        reader.close()
    if len(batches) < steps:
        from perception.errors import DriveError
        raise DriveError(f"{drive}: fewer than {steps} complete frame sets for the parity check")
    images = np.stack(batches)
    return images, t_ns


def max_parity_error(model: TemporalCenterNet | TorchEngine, onnx_path: str | os.PathLike, images: np.ndarray,
                     t_ns: np.ndarray) -> dict[str, float]:
    """Stream `images` [T,N,3,H,W] (times `t_ns` [T]) through torch (`model`: a network or a TorchEngine) and
    ONNX Runtime; per output the max of |ort - torch| / max(1, |torch|).

    The velocity head is compared as what the network regresses, the displacement in cells since the
    previous frame (velocity x gap / stride): in pixels per second the same float rounding is stride / gap
    (80x at 10 Hz) larger, so a fixed tolerance would judge the unit, not the export."""
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.engine.torch import TorchEngine

    engines = [model if isinstance(model, TorchEngine) else TorchEngine(model), OnnxRuntimeEngine(onnx_path)]
    stride = engines[1].contract.stride
    states = [e.initial_state(images.shape[1]) for e in engines]
    worst: dict[str, float] = {}
    for step in range(images.shape[0]):
        results = []
        gap_s = (t_ns[step] - t_ns[step - 1]) / 1e9 if step else 1.0
        for i, engine in enumerate(engines):
            heads, states[i] = engine.run(images[step], np.full(images.shape[1], t_ns[step]), states[i])
            outputs = heads.as_dict() | {"state_features": states[i].features, "state_ages": states[i].ages}
            outputs["velocity"] = outputs["velocity"] * (gap_s / stride)
            results.append(outputs)
        for k, ref in results[0].items():
            err = np.abs(results[1][k] - ref) / np.maximum(1.0, np.abs(ref))
            worst[k] = max(worst.get(k, 0.0), float(err.max()) if err.size else 0.0)
    return worst
