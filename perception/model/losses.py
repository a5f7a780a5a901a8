"""CenterNet losses over the heads of every step of a clip."""

from __future__ import annotations

import torch
from torch import Tensor

from perception.model.targets import DISPLACEMENT, LOG_DEPTH, LOG_SIZE, MASK_BOX, MASK_DISPLACEMENT, MASK_DEPTH, OFFSET

# "box_iou" is off by default (TrainConfig.iou_loss_weight turns it on)
WEIGHTS = {"heatmap": 1.0, "offset": 1.0, "size": 1.0, "displacement": 1.0, "depth": 1.0, "box_iou": 0.0}


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


def box_giou_loss(offset: Tensor, log_size: Tensor, target_offset: Tensor, target_log_size: Tensor,
                  mask: Tensor) -> Tensor:
    """Mean 1 - GIoU (Rezatofighi et al. 2019) of the predicted and the target box at the masked centre cells.

    offset / log_size [B,2,h,w] as the heads regress them (box centre minus cell index, log(size / stride)),
    so both boxes are in cells relative to the same cell. Hand-written because torchvision (whose
    generalized_box_iou_loss this equals) is not a dependency; its IoU part is cross-tested against
    pycocotools in tests/test_model.py. Unlike the L1 on log size, it couples centre and size the way AP@0.5
    scores them: a box one cell off costs a small box far more than a large one.
    """
    def corners(centre: Tensor, log_wh: Tensor) -> tuple[Tensor, Tensor]:
        half = torch.exp(torch.clamp(log_wh, -6.0, 8.0)) / 2
        return centre - half, centre + half

    lo, hi = corners(offset, log_size)
    tlo, thi = corners(target_offset, target_log_size)
    inter = torch.clamp(torch.minimum(hi, thi) - torch.maximum(lo, tlo), min=0).prod(1)
    union = (hi - lo).prod(1) + (thi - tlo).prod(1) - inter
    enclosing = (torch.maximum(hi, thi) - torch.minimum(lo, tlo)).prod(1)
    giou = inter / union - (enclosing - union) / enclosing
    return ((1 - giou) * mask).sum() / mask.sum().clamp(min=1.0)


def detection_loss(heads: dict[str, Tensor], heatmap: Tensor, heatmap_weight: Tensor, regression: Tensor,
                   masks: Tensor, weights: dict[str, float] = WEIGHTS) -> dict[str, Tensor]:
    """Losses of a batch of supervised steps (B = camera-steps). `heads`: the network's training heads
    (`TemporalCenterNet._heads`), targets as rendered by perception.model.targets. Returns each term and
    'total' (the terms weighted by `weights`)."""
    terms = {
        "heatmap": focal_loss(heads["heatmap"], heatmap, heatmap_weight),
        "offset": _masked_l1(heads["offset"], regression[:, OFFSET], masks[:, MASK_BOX]),
        "size": _masked_l1(heads["log_size"], regression[:, LOG_SIZE], masks[:, MASK_BOX]),
        "displacement": _masked_l1(heads["displacement"], regression[:, DISPLACEMENT], masks[:, MASK_DISPLACEMENT]),
        "depth": _masked_l1(heads["log_depth"], regression[:, LOG_DEPTH], masks[:, MASK_DEPTH]),
    }
    if weights["box_iou"]:
        terms["box_iou"] = box_giou_loss(heads["offset"], heads["log_size"], regression[:, OFFSET],
                                         regression[:, LOG_SIZE], masks[:, MASK_BOX])
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms
