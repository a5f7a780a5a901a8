"""CenterNet losses over the heads of every step of a clip."""

from __future__ import annotations

import torch
from torch import Tensor

from perception.model.targets import DISPLACEMENT, LOG_DEPTH, LOG_SIZE, MASK_BOX, MASK_DISPLACEMENT, MASK_DEPTH, OFFSET

WEIGHTS = {"heatmap": 1.0, "offset": 1.0, "size": 1.0, "displacement": 1.0, "depth": 1.0}


def focal_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects.
    pred / target [B,C,h,w], weight [B,h,w] (0 = ignore region)."""
    pred = pred.clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    neg = (1 - pos) * weight[:, None]
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - target) ** 4 * neg
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def _masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """pred / target [B,k,h,w], mask [B,h,w]."""
    return (torch.abs(pred - target) * mask[:, None]).sum() / (mask.sum() * pred.shape[1]).clamp(min=1.0)


def detection_loss(heads: dict[str, Tensor], heatmap: Tensor, heatmap_weight: Tensor, regression: Tensor,
                   masks: Tensor) -> dict[str, Tensor]:
    """Losses of a batch of supervised steps (B = camera-steps). `heads`: the network's training heads
    (`TemporalCenterNet._heads`), targets as rendered by perception.model.targets. Returns each term and
    'total'."""
    terms = {
        "heatmap": focal_loss(heads["heatmap"], heatmap, heatmap_weight),
        "offset": _masked_l1(heads["offset"], regression[:, OFFSET], masks[:, MASK_BOX]),
        "size": _masked_l1(heads["log_size"], regression[:, LOG_SIZE], masks[:, MASK_BOX]),
        "displacement": _masked_l1(heads["displacement"], regression[:, DISPLACEMENT], masks[:, MASK_DISPLACEMENT]),
        "depth": _masked_l1(heads["log_depth"], regression[:, LOG_DEPTH], masks[:, MASK_DEPTH]),
    }
    terms["total"] = sum(WEIGHTS[k] * v for k, v in terms.items())
    return terms
