"""Torch engine: runs the training network directly, to debug parity with the exported models."""

from __future__ import annotations

import os

import numpy as np
import torch

from perception.contract import ModelExpectation, check_expectation
from perception.engine.base import Engine
from perception.model.network import INPUT_NAMES, OUTPUT_NAMES, TemporalCenterNet


class TorchEngine(Engine):
    def __init__(self, model: TemporalCenterNet | str | os.PathLike, expected: ModelExpectation | None = None) -> None:
        if not isinstance(model, TemporalCenterNet):
            from perception.model.checkpoint import load_model
            where = str(model)
            model, payload = load_model(model)
            model_id = f"{payload['name']}-checkpoint"
        else:
            where, model_id = "torch model", "torch-model"
        self.model = model.eval()
        self.contract = model.cfg.contract(model_id, graph_sha256="")
        if expected is not None:
            check_expectation(self.contract, expected, where)
        self.name = "torch"
        self.precision = "fp32"

    def _infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.model(*(torch.from_numpy(inputs[k]) for k in INPUT_NAMES))
        return {name: t.numpy() for name, t in zip(OUTPUT_NAMES, out)}
