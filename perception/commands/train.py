"""`perception train --drives A.mcap ... --val-drives V.mcap --out RUN_DIR`: train the temporal CNN."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


# TrainConfig fields given on the command line: type, help (the default comes from TrainConfig)
TRAIN_OPTIONS = {
    "epochs": (int, "epochs (upper bound: early stopping)"), "steps_per_epoch": (int, "steps per epoch"),
    "batch_size": (int, "clips per step"), "clip_length": (int, "frames per clip"),
    "crop_width": (int, "training crop width in network pixels (full height)"),
    "lr": (float, "peak learning rate (AdamW)"),
    "backbone_lr_scale": (float, "learning-rate factor of the backbone's trainable parameters"),
    "weight_decay": (float, "AdamW weight decay"),
    "ema_decay": (float, "> 0: validate and keep the moving average of the weights with this decay"),
    "iou_loss_weight": (float, "weight of the 1 - GIoU box loss (0: off)"),
    "warmup_steps": (int, "linear warm-up steps before the cosine decay"),
    "patience": (int, "epochs without a better validation mAP before stopping"),
    "val_frames": (int, "validate on the first N frames of each camera"),
    "seed": (int, "random seed"), "threads": (int, "torch threads"),
    "workers": (int, "clip-drawing worker processes (0: none)"),
}


def add_train_options(parser: argparse.ArgumentParser, names) -> None:
    """`--name` options for these TrainConfig fields (TRAIN_OPTIONS), defaults from TrainConfig."""
    from perception.model.train import TrainConfig

    d = TrainConfig.__dataclass_fields__
    for name in names:
        kind, help_text = TRAIN_OPTIONS[name]
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=d[name].default, dest=name,
                            help=f"{help_text} (default {d[name].default})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from perception.model.train import FREEZE_CHOICES
    parser.add_argument("--drives", nargs="+", required=True, metavar="FILE", help="training drives with ground truth")
    parser.add_argument("--val-drives", nargs="+", required=True, metavar="FILE",
                        help="validation drives (early stopping and best checkpoint by their mAP@0.5)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run folder: last.pt, best.pt, log.csv, config.json")
    parser.add_argument("--name", default="model", help="model name (part of the exported model id)")
    parser.add_argument("--model-config", type=Path, metavar="YAML",
                        help="model hyper-parameters (perception.model.config.ModelConfig fields)")
    parser.add_argument("--input-size", metavar="WxH", help="network input size, e.g. 448x256")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    parser.add_argument("--init", metavar="CHECKPOINT", help="start from these weights")
    parser.add_argument("--init-part", choices=("all", "backbone"), default="all",
                        help="what --init copies (default all)")
    parser.add_argument("--teacher-init", metavar="YOLOX.onnx",
                        help="start a 'yolox-nano' backbone from this YOLOX-Nano export (transfer learning)")
    parser.add_argument("--freeze", choices=FREEZE_CHOICES, default="none",
                        help="parameters kept fixed (teacher: the convolutions --teacher-init copied; "
                             "teacher-early: its layers up to the stride-8 stage)")
    add_train_options(parser, TRAIN_OPTIONS)
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the convolutions (CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import yaml

    from perception.errors import ConfigError
    from perception.model.config import ModelConfig
    from perception.model.train import TrainConfig, train

    model = {}
    if args.model_config:
        try:
            model = yaml.safe_load(args.model_config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{args.model_config}: cannot read model config: {e}") from None
    if args.input_size:
        try:
            w, h = (int(v) for v in args.input_size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--input-size: expected WxH like 448x256, got {args.input_size!r}") from None
        model.update(input_width=w, input_height=h)
    model_cfg = ModelConfig.from_dict(model, where=str(args.model_config or "--input-size"))
    cfg = TrainConfig(
        drives=tuple(args.drives), val_drives=tuple(args.val_drives), out=str(args.out), name=args.name,
        model=model_cfg, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        clip_length=args.clip_length, crop_width=args.crop_width, lr=args.lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, backbone_lr_scale=args.backbone_lr_scale, patience=args.patience,
        ema_decay=args.ema_decay, iou_loss_weight=args.iou_loss_weight,
        val_frames=args.val_frames, seed=args.seed,
        threads=args.threads, workers=args.workers, bf16=args.bf16, init=args.init, init_part=args.init_part,
        teacher_init=args.teacher_init, freeze=args.freeze)
    if args.bf16 and not native_bf16():
        print("warning: --bf16 on a CPU without native bfloat16 (AVX512-BF16 or AMX): autocast emulates it, "
              "about 7x slower than float32 (7.2 vs 1.0 s per step of the demo build on an AVX2 EPYC)",
              file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=list))
    best = train(cfg, resume=args.resume, progress=not args.quiet)
    print(json.dumps({"best": best, "checkpoint": str(args.out / "best.pt")}, indent=2, default=float))
    return 0


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively. torch exposes it only as private helpers (torch.cpu's
    CPU-feature checks, the ones oneDNN dispatches on); missing helpers count as unknown: yes."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not all(callable(check) for check in checks):
        return True
    return any(check() for check in checks)
