"""Torch engine: the training network in torch, from a checkpoint or from an exported ONNX file.

From an ONNX file (`perception export` output) the network is rebuilt from the architecture stored next to
the contract (`perception.model_config`) and its weights are the graph's convolutions, taken in graph order
(the exporter folded the batch norms into them; pruned widths come with the weights). That is the engine
for GPU machines that have torch with CUDA but no TensorRT or ONNX Runtime GPU (`device="cuda"`); on a CPU
it is the parity reference for the exported file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from perception.contract import ModelExpectation, check_expectation, load_model
from perception.engine.base import Engine
from perception.errors import ConfigError, ModelContractError
from perception.model.config import ModelConfig
from perception.model.network import INPUT_NAMES, OUTPUT_NAMES, TemporalCenterNet
from perception.model.prune import fitted_conv

MAX_MODEL_CONFIG_BYTES = 16 * 1024


class TorchEngine(Engine):
    """`model`: a network, a checkpoint (.pt) or an exported model (.onnx); `device`: a torch device."""

    def __init__(self, model: TemporalCenterNet | str | os.PathLike, expected: ModelExpectation | None = None,
                 device: str = "cpu") -> None:
        if isinstance(model, TemporalCenterNet):
            where, model_id, contract = "torch model", "torch-model", None
        elif Path(model).suffix == ".onnx":
            where = str(model)
            model, contract = network_from_onnx(model)
            model_id = contract.model_id
        else:
            from perception.model.checkpoint import load_model as load_checkpoint
            where = str(model)
            model, payload = load_checkpoint(model)
            model_id, contract = f"{payload['name']}-checkpoint", None
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.contract = contract or model.cfg.contract(model_id, graph_sha256="")
        if expected is not None:
            check_expectation(self.contract, expected, where)
        self.name = "torch" if self.device.type == "cpu" else f"torch[{self.device.type}]"
        self.precision = "fp32"

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.model(*(torch.from_numpy(inputs[k]).to(self.device) for k in INPUT_NAMES))
        return {name: t.cpu().numpy() for name, t in zip(OUTPUT_NAMES, out)}


def network_from_onnx(path: str | os.PathLike) -> tuple[TemporalCenterNet, object]:
    """(network, contract) of an exported model: the file checked as the ONNX engines check it, the
    architecture from its `perception.model_config`, every convolution from the graph (shapes checked)."""
    import onnx
    from onnx import numpy_helper

    from perception.model.export import MODEL_CONFIG_KEY

    loaded = load_model(path)
    proto = onnx.load_model_from_string(loaded.data)
    props = {p.key: p.value for p in proto.metadata_props}
    text = props.get(MODEL_CONFIG_KEY)
    if text is None:
        raise ModelContractError(f"{path}: no '{MODEL_CONFIG_KEY}' metadata (exported before it was written: "
                                 "export it again)")
    if len(text) > MAX_MODEL_CONFIG_BYTES:
        raise ModelContractError(f"{path}: '{MODEL_CONFIG_KEY}' is larger than {MAX_MODEL_CONFIG_BYTES} bytes")
    try:
        cfg = ModelConfig.from_dict(json.loads(text), where=f"{path}: {MODEL_CONFIG_KEY}")
    except (ValueError, ConfigError) as e:
        raise ModelContractError(f"{path}: unreadable '{MODEL_CONFIG_KEY}': {e}") from None
    model = TemporalCenterNet(cfg).eval()
    _drop_batch_norms(model)
    inits = {i.name: i for i in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type == "Conv"]
    slots = _convolutions_in_call_order(model)
    if len(nodes) != len(slots):
        raise ModelContractError(f"{path}: {len(nodes)} convolutions in the graph, its model config builds "
                                 f"{len(slots)}")
    for node, (parent, attr, conv) in zip(nodes, slots):
        try:
            w = numpy_helper.to_array(inits[node.input[1]])
            b = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else None
        except KeyError as e:
            raise ModelContractError(f"{path}: convolution {node.name} reads {e} that is not an initializer") from None
        if w.ndim != 4 or w.shape[2:] != tuple(conv.weight.shape[2:]):
            raise ModelContractError(f"{path}: convolution {node.name} has weights {list(w.shape)}, the network "
                                     f"needs a {list(conv.kernel_size)} kernel")
        try:  # pruned models have other widths: the weights say which
            replaced = fitted_conv(conv, w.shape, str(path), node.name, bias=True)
        except ConfigError as e:
            raise ModelContractError(str(e)) from None
        with torch.no_grad():
            replaced.weight.copy_(torch.from_numpy(w.copy()))
            replaced.bias.copy_(torch.from_numpy(b.copy()) if b is not None else torch.zeros(w.shape[0]))
        setattr(parent, attr, replaced)
    return model, loaded.contract


def _drop_batch_norms(model: nn.Module) -> None:
    """The exported graph has every batch norm folded into the convolution before it."""
    for module in list(model.modules()):
        for attr, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, attr, nn.Identity())


def _convolutions_in_call_order(model: TemporalCenterNet) -> list[tuple[nn.Module, str, nn.Conv2d]]:
    """(parent, attribute, conv) of every convolution, in the order one streaming step calls them (the
    order the exporter traced them into the graph)."""
    parents = {id(child): (module, attr) for module in model.modules() for attr, child in module.named_children()}
    order: list[nn.Conv2d] = []
    handles = [m.register_forward_pre_hook(lambda m, _: order.append(m)) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    try:
        cfg = model.cfg
        with torch.no_grad():
            state = model.initial_state(1)
            model(torch.zeros(1, 3, cfg.input_height, cfg.input_width), *state, torch.zeros(1), torch.ones(1))
    finally:
        for h in handles:
            h.remove()
    return [(*parents[id(m)], m) for m in order]
