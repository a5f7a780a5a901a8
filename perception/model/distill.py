"""Distillation from an unpruned (teacher) network into a pruned (student) one, as train.train_step's loss hook.

On every training clip the teacher runs too (no gradients); the student learns its soft outputs:

- heatmap: the binary KL divergence of the student's per-class probabilities from the teacher's, summed
  over cells and normalised by the number of the teacher's confident cells (like the focal loss by the
  number of objects), so it is 0 exactly when the student reproduces the teacher;
- size (log), offset, displacement (the velocity head's regression) and log depth: L1 to the teacher's at
  the teacher's confident cells (peak class probability >= `confidence`); displacement only where the
  teacher had history (velocity_valid).

The mixed loss is (1 - alpha) x the ground-truth total + alpha x the distillation total.
"""

from __future__ import annotations

import torch
from torch import Tensor

from perception.errors import ConfigError
from perception.model.losses import _masked_l1
from perception.model.network import TemporalCenterNet
from perception.model.train import clip_heads

KD_WEIGHTS = {"kd_heatmap": 1.0, "kd_offset": 1.0, "kd_size": 1.0, "kd_displacement": 1.0, "kd_depth": 1.0}
EPS = 1e-4   # probabilities clamped as in the focal loss


def distillation_loss(student: dict[str, Tensor], teacher: dict[str, Tensor], confidence: float = 0.3) -> dict[str, Tensor]:
    """Terms of the student's training heads (train.clip_heads) against the teacher's; plus 'distill'."""
    s = student["heatmap"].clamp(EPS, 1 - EPS)
    t = teacher["heatmap"].clamp(EPS, 1 - EPS)
    kl = t * torch.log(t / s) + (1 - t) * torch.log((1 - t) / (1 - s))
    confident = (teacher["heatmap"].amax(1) >= confidence).float()            # [B,h,w]
    with_history = confident * teacher["velocity_valid"][:, None, None]
    terms = {
        "kd_heatmap": kl.sum() / confident.sum().clamp(min=1.0),
        "kd_offset": _masked_l1(student["offset"], teacher["offset"], confident),
        "kd_size": _masked_l1(student["log_size"], teacher["log_size"], confident),
        "kd_displacement": _masked_l1(student["displacement"], teacher["displacement"], with_history),
        "kd_depth": _masked_l1(student["log_depth"], teacher["log_depth"], confident),
    }
    terms["distill"] = sum(KD_WEIGHTS[k] * v for k, v in terms.items())
    return terms


class Distiller:
    """train.train_step's loss hook: runs the teacher on the step's clips and mixes the losses.
    `history` keeps each step's distillation total (the run's log.csv has the mixed total only)."""

    def __init__(self, teacher: TemporalCenterNet, alpha: float = 0.5, confidence: float = 0.3,
                 bf16: bool = False) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distillation alpha must be in [0, 1], got {alpha}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.confidence, self.bf16 = alpha, confidence, bf16
        self.history: list[float] = []

    def __call__(self, batch: dict, heads: dict[str, Tensor], terms: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            teacher = clip_heads(self.teacher.forward_clip(batch["images"], batch["dt"], batch["fresh"]))
        kd = distillation_loss(heads, teacher, self.confidence)
        self.history.append(float(kd["distill"].detach()))
        ground_truth = terms["total"]
        return {**{k: v for k, v in terms.items() if k != "total"}, **kd,
                "total": (1 - self.alpha) * ground_truth + self.alpha * kd["distill"]}
