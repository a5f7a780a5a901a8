"""Structured channel pruning of the temporal CNN (torch-pruning), keeping the model's contract fixed.

`prune_channels` removes `ratio` of the output channels of every convolution except the ones whose widths
are the contract: the backbone's last convolution (its channels are the stored temporal state, so
`state_shape` does not change) and the head convolution (the heads). The network input is never pruned.
Coupled channels (residual additions, concatenations, depthwise convolutions, batch norms) are removed
together, as torch-pruning's dependency graph groups them; which channels go is decided by the L2 (or L1)
norm of each group's weights. Parameters and multiply-accumulates fall to about (1 - ratio)^2 of the
unpruned network's (both the input and the output side of a convolution shrink).

A pruned network no longer has the widths its ModelConfig describes, so its checkpoints carry a `pruned`
entry (PRUNED_KEY); perception/model/checkpoint.py then rebuilds the convolutions and batch norms at the
widths of the stored weights (`fit_to_state_dict`) and checks the interfaces again.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from perception.errors import ConfigError
from perception.model.network import OUTPUT_NAMES, TemporalCenterNet, count_macs, count_parameters

PRUNED_KEY = "pruned"
IMPORTANCE = {"l2": 2, "l1": 1}   # norm of each channel group's weights


def interface_layers(model: TemporalCenterNet) -> list[nn.Conv2d]:
    """The convolutions whose output widths are the contract: stored features, heads."""
    backbone = model.backbone
    last = backbone.out[0] if model.cfg.backbone == "resnet" else backbone.project[0]
    return [last, model.head_out]


def prune_channels(model: TemporalCenterNet, ratio: float, importance: str = "l2",
                   round_to: int | None = None) -> TemporalCenterNet:
    """A pruned copy of `model` (eval mode): `ratio` of the channels of every prunable layer removed, the
    lowest-norm ones first; `round_to` keeps each layer's remaining channels a multiple of it."""
    import torch_pruning as tp

    from perception.model.export import example_inputs

    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"prune ratio must be in (0, 1), got {ratio}")
    if importance not in IMPORTANCE:
        raise ConfigError(f"importance must be one of {', '.join(IMPORTANCE)}, got {importance!r}")
    if round_to is not None and round_to < 1:
        raise ConfigError(f"round_to must be >= 1, got {round_to}")
    student = copy.deepcopy(model).eval()
    pruner = tp.pruner.BasePruner(
        student, example_inputs(student.cfg, 1), importance=tp.importance.MagnitudeImportance(p=IMPORTANCE[importance]),
        pruning_ratio=ratio, ignored_layers=interface_layers(student), round_to=round_to)
    pruner.step()
    check_interfaces(student, "pruned network")
    return student


def pruning_record(teacher: TemporalCenterNet, student: TemporalCenterNet, ratio: float, importance: str,
                   round_to: int | None, source: str) -> dict:
    """The checkpoint's `pruned` entry: how the network was made and what it cost before and after."""
    return {"ratio": float(ratio), "importance": importance, "round_to": round_to, "source": source,
            "parameters_before": count_parameters(teacher), "parameters": count_parameters(student),
            "macs_before": count_macs(teacher), "macs": count_macs(student)}


def check_interfaces(model: TemporalCenterNet, where: str) -> None:
    """One streaming step at a small input: every output has the channels the contract says (a pruned
    network must fit the same state and heads as the unpruned one)."""
    cfg = model.cfg
    size = 64                                  # a multiple of every backbone's total stride
    h = w = size // cfg.stride
    k1, n_cls = cfg.window - 1, len(cfg.classes)
    expected = {"heatmap": (1, n_cls, h, w), "size": (1, 2, h, w), "offset": (1, 2, h, w), "velocity": (1, 2, h, w),
                "log_depth": (1, 1, h, w), "velocity_valid": (1,),
                "state_features_out": (1, k1, cfg.feature_channels, h, w), "state_ages_out": (1, k1)}
    state = torch.zeros(1, k1, cfg.feature_channels, h, w)
    ages = torch.full((1, k1), 0.1)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, 3, size, size), state, ages, torch.full((1,), 0.1), torch.ones(1))
    except RuntimeError as e:
        raise ConfigError(f"{where}: the layer widths do not fit the contract's state and heads: {e}") from None
    wrong = [f"{name} {tuple(t.shape)} (needs {expected[name]})" for name, t in zip(OUTPUT_NAMES, out)
             if tuple(t.shape) != expected[name]]
    if wrong:
        raise ConfigError(f"{where}: outputs do not fit the contract: {', '.join(wrong)}")


def fit_to_state_dict(model: TemporalCenterNet, state: dict[str, torch.Tensor], where: str) -> None:
    """Rebuild `model`'s convolutions and batch norms at the widths of a pruned network's weights `state`
    (in place), then check the interfaces; loading the weights is the caller's."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            new = fitted_conv(module, _shape(state, f"{name}.weight", where), where, name)
        elif isinstance(module, nn.BatchNorm2d):
            n = _shape(state, f"{name}.weight", where)[0]
            new = nn.BatchNorm2d(n, module.eps, module.momentum, module.affine, module.track_running_stats)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    check_interfaces(model, where)


def _shape(state: dict[str, torch.Tensor], key: str, where: str) -> tuple[int, ...]:
    if key not in state:
        raise ConfigError(f"{where}: pruned weights have no {key!r}")
    return tuple(state[key].shape)


def fitted_conv(conv: nn.Conv2d, shape: tuple[int, ...], where: str, name: str,
                bias: bool | None = None) -> nn.Conv2d:
    """A convolution like `conv` (kernel, stride, padding; plain or depthwise) for weights of `shape`;
    `bias`: whether it has one (None: as `conv`)."""
    depthwise = conv.groups > 1
    if depthwise and not conv.groups == conv.in_channels == conv.out_channels:
        raise ConfigError(f"{where}: {name}: only plain and depthwise convolutions can be refitted")
    if len(shape) != 4 or (depthwise and shape[1] != 1):
        raise ConfigError(f"{where}: {name}.weight has shape {list(shape)}, not a convolution of this kind")
    out = shape[0]
    cin, groups = (out, out) if depthwise else (shape[1], 1)
    return nn.Conv2d(cin, out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups,
                     bias=conv.bias is not None if bias is None else bias, padding_mode=conv.padding_mode)
