"""The training loop: clips from drives -> AdamW (warm-up + cosine) -> validation mAP -> checkpoints.

    run_dir/last.pt   every epoch (model, optimizer, scheduler, epoch, best metric): `resume` continues it
    run_dir/best.pt   the epoch with the best validation mAP (what `perception export` takes): the
                      exponential moving average of the weights when `ema_decay` > 0 (what validation runs)
    run_dir/log.csv   one row per epoch: learning rate, loss terms, validation metrics, seconds

Deterministic for a given configuration on one machine: epoch e draws its clips from
numpy.random.default_rng([seed, e]) and torch is seeded with (seed, e), so a resumed run continues with
the clips the uninterrupted run would have drawn.

CPU notes (a shared 2-core machine): clips are drawn in one worker process while the main process trains
with `threads` torch threads (default 1: two OpenMP threads stall badly when other processes take a core);
`bf16` runs the convolutions under CPU autocast (~1.7x faster with AVX512-BF16; losses in float32; ~7x
slower where the CPU lacks native bfloat16, which `perception train` warns about).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from perception.errors import ConfigError
from perception.model.checkpoint import model_state, read_checkpoint, save_checkpoint
from perception.model.config import ModelConfig
from perception.model.dataset import Augmentation, ClipSampler, load_sequences
from perception.model.evaluate import evaluate
from perception.model.losses import WEIGHTS, detection_loss
from perception.model.network import TemporalCenterNet

LOSS_TERMS = ("heatmap", "offset", "size", "displacement", "depth", "box_iou")   # losses.detection_loss's terms
LOG_FIELDS = ("epoch", "lr", "loss", *LOSS_TERMS, "mAP@0.5", "range_rel_error_median_under_40m",
              "velocity_error_median_px_s", "seconds")


FREEZE_CHOICES = ("none", "backbone", "teacher", "teacher-early")
LossHook = Callable[[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    drives: tuple[str, ...]
    val_drives: tuple[str, ...]
    out: str
    name: str = "model"
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 4
    clip_length: int = 4
    crop_width: int | None = 224
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    grad_clip: float = 10.0
    patience: int = 6                     # epochs without a better validation mAP before stopping
    val_frames: int | None = None         # per camera sequence (None: all)
    seed: int = 0
    threads: int = 1
    workers: int = 1                      # processes drawing clips (0: in the training process)
    bf16: bool = False
    init: str | None = None               # checkpoint to start from
    init_part: str = "all"                # "all" | "backbone"
    teacher_init: str | None = None       # YOLOX-Nano ONNX whose weights start a "yolox-nano" backbone
    freeze: str = "none"                  # "none" | "backbone" | "teacher" | "teacher-early" (FREEZE_CHOICES)
    backbone_lr_scale: float = 1.0        # learning-rate factor of the backbone's trainable parameters
    ema_decay: float = 0.0                # > 0: validate and keep the moving average of the weights (0.999)
    iou_loss_weight: float = 0.0          # weight of the 1 - GIoU box term (losses.box_giou_loss)
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        problems = []
        if not self.drives:
            problems.append("no training drives")
        if not self.val_drives:
            problems.append("no validation drives (early stopping needs them)")
        for name in ("epochs", "steps_per_epoch", "batch_size", "patience"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_length < 2:
            problems.append(f"clip_length must be >= 2, got {self.clip_length}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            problems.append("lr must be > 0, weight_decay and warmup_steps >= 0")
        if self.init_part not in ("all", "backbone"):
            problems.append(f"init_part must be 'all' or 'backbone', got {self.init_part!r}")
        if self.freeze not in FREEZE_CHOICES:
            problems.append(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.freeze!r}")
        if (self.teacher_init or self.freeze.startswith("teacher")) and self.model.backbone != "yolox-nano":
            problems.append("teacher_init / freeze 'teacher' need the 'yolox-nano' backbone")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.iou_loss_weight >= 0:
            problems.append(f"iou_loss_weight must be >= 0, got {self.iou_loss_weight}")
        if not self.backbone_lr_scale > 0:
            problems.append(f"backbone_lr_scale must be > 0, got {self.backbone_lr_scale}")
        if problems:
            raise ConfigError("train: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine to 0 at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def initialise(model: TemporalCenterNet, path: str, part: str) -> int:
    """Copy weights from a checkpoint (all, or the backbone only); returns the number of tensors copied."""
    payload = read_checkpoint(path)
    source = model_state(payload, ModelConfig.from_dict(payload["config"], where=f"{path}: config"))
    target = model.state_dict()
    keys = [k for k in target if part == "all" or k.startswith("backbone.")]
    for k in keys:
        if k not in source:
            raise ConfigError(f"{path}: init checkpoint has no {k!r} (does its config match?)")
        if source[k].shape != target[k].shape:
            raise ConfigError(f"{path}: {k!r} has shape {list(source[k].shape)}, this model needs {list(target[k].shape)}")
    model.load_state_dict({**target, **{k: source[k] for k in keys}})
    return len(keys)


def frozen_modules(model: TemporalCenterNet, freeze: str) -> list[torch.nn.Module]:
    """What `freeze` keeps fixed: nothing, the backbone, every convolution copied from the teacher, or the
    teacher's early layers only (Focus stem to the stride-8 CSP stage: generic edges and textures; the deeper
    stages, the PAFPN and the head towers adapt to the new data)."""
    if freeze == "none":
        return []
    if freeze == "backbone":
        return [model.backbone]
    if freeze == "teacher":
        return model.backbone.pretrained_convs()
    return [model.backbone.stem, model.backbone.dark2, model.backbone.dark3]


def weight_average(model: TemporalCenterNet, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """The exponential moving average of `model`'s weights and buffers (batch-norm statistics too). The
    decay warms up as in tf.train.ExponentialMovingAverage(num_updates): min(decay, (1 + n) / (10 + n)), so the
    first steps, far from where training goes, are forgotten quickly (a ramp of YOLOX's kind, 1 - exp(-n / 2000),
    would keep the average to the last few dozen steps over a whole run of a few thousand)."""
    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        n = float(updates)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return averaged * d + current * (1.0 - d)

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=average, use_buffers=True)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, model: TemporalCenterNet | None = None,
          loss_hook: LossHook | None = None, checkpoint_extra: dict | None = None) -> dict:
    """Train; returns the best validation metrics. Writes checkpoints and the CSV log into cfg.out.

    `model`: start from this network (of config cfg.model) instead of a new one, e.g. a pruned one;
    `loss_hook`: changes each step's loss terms (train_step); `checkpoint_extra`: saved in every checkpoint.
    """
    from perception.engine.torch import TorchEngine

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    train_seqs = [s for d in cfg.drives for s in load_sequences(d, cfg.model, progress=progress)]
    val_seqs = [s for d in cfg.val_drives for s in load_sequences(d, cfg.model, progress=progress)]
    if cfg.val_frames:
        for s in val_seqs:
            s.images, s.t_ns = s.images[:cfg.val_frames], s.t_ns[:cfg.val_frames]
            s.labels, s.objects = s.labels[:cfg.val_frames], s.objects[:cfg.val_frames]
    sampler = ClipSampler(train_seqs, cfg.model, cfg.clip_length, cfg.augmentation, cfg.crop_width)

    if model is None:
        model = TemporalCenterNet(cfg.model)
    elif model.cfg != cfg.model:
        raise ConfigError("train: the given network's config differs from the training config's model")
    if cfg.teacher_init:
        from perception.model.yolox import load_teacher_weights
        load_teacher_weights(model.backbone, cfg.teacher_init)
    if cfg.init:
        initialise(model, cfg.init, cfg.init_part)
    frozen = frozen_modules(model, cfg.freeze)
    for module in frozen:
        module.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    backbone = {id(p) for p in model.backbone.parameters()}
    groups = [{"params": [p for p in params if id(p) not in backbone]},
              {"params": [p for p in params if id(p) in backbone], "lr": cfg.lr * cfg.backbone_lr_scale}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total))

    ema = weight_average(model, cfg.ema_decay) if cfg.ema_decay else None
    weights = {**WEIGHTS, "box_iou": cfg.iou_loss_weight}

    start_epoch, best, bad_epochs, best_metrics = 0, -1.0, 0, {}
    last = out / "last.pt"
    if resume:
        if not last.exists():
            raise ConfigError(f"{last}: nothing to resume")
        ck = read_checkpoint(last)
        if ck["config"] != cfg.model.to_dict():
            raise ConfigError(f"{last}: the run was started with another model config; cannot resume it")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if ema is not None:
            if "ema" not in ck:
                raise ConfigError(f"{last}: the run was started without ema_decay; cannot resume it with it")
            ema.load_state_dict(ck["ema"])
        start_epoch, best, bad_epochs = int(ck["epoch"]), float(ck["best"]), int(ck["bad_epochs"])
        best_metrics = dict(ck.get("best_metrics", {}))

    log_path = out / "log.csv"
    if not resume or not log_path.exists():
        with log_path.open("w", newline="") as f:
            csv.writer(f).writerow(LOG_FIELDS)

    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        model.train()
        for module in frozen:
            module.eval()
        sums: dict[str, float] = {}
        clips = _clip_batches(sampler, cfg, epoch)
        bar = tqdm(clips, total=cfg.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False, unit="step")
        for batch in bar:
            terms = train_step(model, batch, optimizer, params, cfg.grad_clip, cfg.bf16, loss_hook, weights)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{terms['total']:.3f}")
        kept = model if ema is None else ema.module
        metrics = evaluate(TorchEngine(kept.eval()), val_seqs).as_dict()
        score = metrics["mAP@0.5"] if not math.isnan(metrics["mAP@0.5"]) else 0.0
        improved = score > best
        if improved:
            best, bad_epochs, best_metrics = score, 0, {**metrics, "epoch": epoch + 1}
            save_checkpoint(out / "best.pt", kept, cfg.name, epoch=epoch + 1, metrics=metrics,
                            train_config=_plain(cfg.to_dict()), **(checkpoint_extra or {}))
        else:
            bad_epochs += 1
        save_checkpoint(last, model, cfg.name, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        epoch=epoch + 1, best=best, bad_epochs=bad_epochs, best_metrics=_plain(best_metrics),
                        train_config=_plain(cfg.to_dict()), **({} if ema is None else {"ema": ema.state_dict()}),
                        **(checkpoint_extra or {}))
        n = cfg.steps_per_epoch
        row = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "loss": sums.get("total", 0.0) / n,
               **{k: sums.get(k, 0.0) / n for k in LOSS_TERMS},
               **{k: metrics[k] for k in ("mAP@0.5", "range_rel_error_median_under_40m", "velocity_error_median_px_s")},
               "seconds": time.perf_counter() - t0}
        with log_path.open("a", newline="") as f:
            csv.writer(f).writerow([f"{row[k]:.6g}" if isinstance(row[k], float) else row[k] for k in LOG_FIELDS])
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {row['loss']:.3f}  val mAP@0.5 {metrics['mAP@0.5']:.3f} "
                       + " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in metrics.items() if k.startswith("AP@"))
                       + ("  (best)" if improved else ""))
    return best_metrics


class _Clips(torch.utils.data.IterableDataset):
    """The batches of one epoch: numpy.random.default_rng([seed, epoch]) decides everything."""

    def __init__(self, sampler: ClipSampler, batch_size: int, steps: int, seed: int, epoch: int) -> None:
        self.sampler, self.batch_size, self.steps, self.seed, self.epoch = sampler, batch_size, steps, seed, epoch

    def __iter__(self):
        import cv2
        cv2.setNumThreads(1)
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.steps):
            yield asdict(self.sampler.batch(rng, self.batch_size))


def _clip_batches(sampler: ClipSampler, cfg: TrainConfig, epoch: int):
    data = _Clips(sampler, cfg.batch_size, cfg.steps_per_epoch, cfg.seed, epoch)
    return torch.utils.data.DataLoader(data, batch_size=None, num_workers=cfg.workers,
                                       prefetch_factor=4 if cfg.workers else None,
                                       persistent_workers=False)


def clip_heads(outs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """forward_clip's per-step heads -> float32 [B*T,...] tensors (camera-major, the targets' order)."""
    return {k: torch.stack([o[k] for o in outs], 1).flatten(0, 1).float()
            for k in ("heatmap", "offset", "log_size", "displacement", "log_depth", "velocity_valid")}


def train_step(model: TemporalCenterNet, batch: dict, optimizer: torch.optim.Optimizer, params: list,
               grad_clip: float, bf16: bool = False, loss_hook: LossHook | None = None,
               weights: dict[str, float] = WEIGHTS) -> dict[str, float]:
    """One optimiser step on a batch of clips (ClipBatch fields as tensors). `loss_hook(batch, heads,
    terms)` returns the terms to use instead of the ground-truth ones (with their 'total')."""
    b, t = batch["dt"].shape
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outs = model.forward_clip(batch["images"], batch["dt"], batch["fresh"])
    heads = clip_heads(outs)
    flat = lambda x: x.reshape((b * t,) + tuple(x.shape[2:]))  # noqa: E731
    terms = detection_loss(heads, flat(batch["heatmap"]), flat(batch["heatmap_weight"]), flat(batch["regression"]),
                           flat(batch["masks"]), weights)
    if loss_hook is not None:
        terms = loss_hook(batch, heads, terms)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def _plain(d: object) -> object:
    """Only str / int / float / bool / None / list / dict, for torch.load(weights_only=True)."""
    if isinstance(d, dict):
        return {str(k): _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    if isinstance(d, (np.floating, np.integer)):
        return d.item()
    return d
