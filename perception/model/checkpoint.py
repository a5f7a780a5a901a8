"""Checkpoints: plain dicts of tensors and primitives (torch.save), read back with weights_only=True only."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from perception.errors import ConfigError
from perception.model.config import ModelConfig
from perception.model.network import TemporalCenterNet

FORMAT = "perception-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: TemporalCenterNet, name: str, **extra: object) -> None:
    """`extra`: optimizer / scheduler state dicts, epoch, metrics, training config (primitives only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "name": name, "config": model.cfg.to_dict(),
               "model": model.state_dict(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: checkpoint not found") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt or unsafe files
        raise ConfigError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a perception checkpoint (no format tag {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ConfigError(f"{path}: checkpoint version {payload.get('version')!r} is not supported ({VERSION})")
    for key in ("name", "config", "model"):
        if key not in payload:
            raise ConfigError(f"{path}: checkpoint is missing {key!r}")
    return payload


def load_model(path: str | os.PathLike) -> tuple[TemporalCenterNet, dict]:
    """The network in eval mode with the checkpoint's weights, and the checkpoint payload."""
    payload = read_checkpoint(path)
    cfg = ModelConfig.from_dict(payload["config"], where=f"{path}: config")
    model = TemporalCenterNet(cfg)
    payload["model"] = model_state(payload, cfg)
    if payload.get("pruned"):   # channel widths below the config's (perception/model/prune.py)
        from perception.model.prune import fit_to_state_dict
        fit_to_state_dict(model, payload["model"], str(path))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise ConfigError(f"{path}: weights do not fit the checkpoint's config: {e}") from None
    return model.eval(), payload


def model_state(payload: dict, cfg: ModelConfig) -> dict:
    """The checkpoint's weights in the current layout. Checkpoints written before the YOLOX backbone's Focus
    stem was folded into one convolution (network.YoloxNanoBackbone) hold its [16, 12, 3, 3] weight: folded
    here (yolox.fold_focus_stem), so loading and `--init` read old and new checkpoints alike."""
    state = dict(payload["model"])
    if cfg.backbone == "yolox-nano":
        _fold_focus_stem(state, cfg)
    return state


def _fold_focus_stem(state: dict, cfg: ModelConfig) -> None:
    from perception.model.yolox import fold_focus_stem

    weight, bias = state.pop("backbone.stem.0.weight", None), state.pop("backbone.stem.0.bias", None)
    if weight is None or bias is None:
        return
    state["backbone.stem.conv.weight"] = torch.from_numpy(fold_focus_stem(weight.numpy(), cfg.std))
    state["backbone.stem.conv.bias"] = bias
