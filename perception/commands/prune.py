"""`perception prune CHECKPOINT --ratio 0.3 --drives ... --val-drives ... --out RUN`: the compression chain.

    1. structured channel pruning (perception/model/prune.py): RUN/pruned_init.pt
    2. fine-tuning with distillation from the unpruned network, mixed with the ground-truth losses
       (perception/model/distill.py through perception/model/train.py): RUN/best.pt, last.pt, log.csv
    3. export of the best checkpoint with its contract, parity-checked: RUN/model.onnx; RUN/prune.json
    then, as for any exported model: `perception quantize RUN/model.onnx --drives ... --out RUN/model.int8.onnx`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from perception.commands.train import add_train_options
    from perception.model.prune import IMPORTANCE

    parser.add_argument("checkpoint", type=Path, help="the trained (unpruned) checkpoint: the distillation teacher")
    parser.add_argument("--ratio", type=float, required=True, help="share of each prunable layer's channels removed")
    parser.add_argument("--drives", nargs="+", required=True, metavar="FILE", help="fine-tuning drives with ground truth")
    parser.add_argument("--val-drives", nargs="+", required=True, metavar="FILE",
                        help="validation drives (best checkpoint by their mAP@0.5)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="run folder: pruned_init.pt, best.pt, last.pt, log.csv, model.onnx, prune.json")
    parser.add_argument("--steps", type=int, default=1000, help="fine-tuning steps in all (0: prune and export only)")
    parser.add_argument("--epochs", type=int, default=5, help="validations during fine-tuning (default 5)")
    parser.add_argument("--importance", choices=tuple(IMPORTANCE), default="l2", help="channel ranking (default l2)")
    parser.add_argument("--round-to", type=int, metavar="K", help="keep channel counts multiples of K (e.g. 8)")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="loss = (1 - alpha) ground truth + alpha distillation (default 0.5)")
    parser.add_argument("--name", help="model name (default: the checkpoint's, with -pruned)")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    add_train_options(parser, ("batch_size", "clip_length", "crop_width", "val_frames", "seed", "threads", "workers"))
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the convolutions (CPU)")
    parser.add_argument("--check-drive", type=Path, metavar="FILE",
                        help="export parity on this drive's first frames (default: a fixed synthetic batch)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from perception.commands.export import PARITY_TOLERANCE
    from perception.contract import ModelExpectation, load_model as load_onnx
    from perception.errors import ConfigError
    from perception.model.checkpoint import load_model, save_checkpoint
    from perception.model.distill import Distiller
    from perception.model.export import export_onnx, max_parity_error, parity_inputs
    from perception.model.prune import PRUNED_KEY, prune_channels, pruning_record
    from perception.model.train import TrainConfig, train

    if args.steps < 0 or args.epochs < 1:
        raise ConfigError(f"--steps must be >= 0 and --epochs >= 1, got {args.steps} and {args.epochs}")
    teacher, payload = load_model(args.checkpoint)
    name = args.name or f"{payload['name']}-pruned"
    student = prune_channels(teacher, args.ratio, args.importance, args.round_to)
    record = pruning_record(teacher, student, args.ratio, args.importance, args.round_to, str(args.checkpoint))
    print(f"pruned {args.ratio:g} of the channels ({args.importance}): parameters {record['parameters_before']:,} -> "
          f"{record['parameters']:,} ({record['parameters'] / record['parameters_before']:.2f}x), MACs per camera "
          f"{record['macs_before'] / 1e9:.3f} G -> {record['macs'] / 1e9:.3f} G "
          f"({record['macs'] / record['macs_before']:.2f}x)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / "pruned_init.pt", student, name, **{PRUNED_KEY: record})

    summary: dict = {"pruned": record}
    best_path = args.out / "pruned_init.pt"
    if args.steps:
        epochs = min(args.epochs, args.steps)
        cfg = TrainConfig(
            drives=tuple(args.drives), val_drives=tuple(args.val_drives), out=str(args.out), name=name,
            model=teacher.cfg, epochs=epochs, steps_per_epoch=args.steps // epochs, batch_size=args.batch_size,
            clip_length=args.clip_length, crop_width=args.crop_width, lr=args.lr,
            warmup_steps=min(100, args.steps // 10), patience=epochs, val_frames=args.val_frames, seed=args.seed,
            threads=args.threads, workers=args.workers, bf16=args.bf16)
        distiller = Distiller(teacher, args.alpha, bf16=args.bf16)
        best = train(cfg, progress=not args.quiet, model=student, loss_hook=distiller,
                     checkpoint_extra={PRUNED_KEY: record})
        tenth = max(1, len(distiller.history) // 10)
        first, last = (float(np.mean(h)) for h in (distiller.history[:tenth], distiller.history[-tenth:]))
        print(f"fine-tuned {cfg.epochs * cfg.steps_per_epoch} steps: distillation loss {first:.4f} (first tenth) -> "
              f"{last:.4f} (last tenth); best validation mAP@0.5 {best.get('mAP@0.5', float('nan')):.4f} "
              f"(epoch {best.get('epoch')})", flush=True)
        summary |= {"best": best, "distill_first_tenth": first, "distill_last_tenth": last}
        best_path = args.out / "best.pt"

    model, _ = load_model(best_path)
    onnx_path = args.out / "model.onnx"
    contract = export_onnx(model, onnx_path, name)
    cfg = model.cfg
    load_onnx(onnx_path, ModelExpectation(classes=cfg.classes, input_width=cfg.input_width,
                                          input_height=cfg.input_height, window=cfg.window, stride=cfg.stride))
    images, t_ns = parity_inputs(cfg, 3, args.check_drive)
    worst = max(max_parity_error(model, onnx_path, images, t_ns).values())
    summary |= {"checkpoint": str(best_path), "onnx": str(onnx_path), "model_id": contract.model_id, "parity": worst}
    (args.out / "prune.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"wrote {onnx_path} ({contract.model_id}) from {best_path.name}; state {list(contract.state_shape)}; "
          f"parity max relative error {worst:.2e}")
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        print(f"parity check FAILED (tolerance {PARITY_TOLERANCE:g})")
        return 1
    print(f"next: perception quantize {onnx_path} --drives ... --out {args.out / 'model.int8.onnx'}")
    return 0
