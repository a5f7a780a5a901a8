"""Build the bundled demo model from nothing but this repository: one command, deterministic inputs.

    python models/build_demo.py            # all stages: data, train, export, evaluate (+ manifest)
    python models/build_demo.py --stage evaluate

Stages:
  data      synthetic drives (replay.synth.cached_drive: fixed seeds and scenarios; the cache key includes the
            generator's code, so changed synth code means new drives)
  train     `perception train` on the training drives, early-stopped on the validation drive
  export    `perception export` of the best checkpoint to models/demo.onnx (parity-checked)
  evaluate  held-out metrics of models/demo.onnx through ONNX Runtime on a drive of another seed *and*
            another scenario (cut_in: never seen in training), plus unseen seeds of the trained
            scenarios; writes models/demo.json (the manifest)

The run folder (checkpoints, CSV log) stays in the cache; only the ONNX file and the manifest are
committed. Training takes tens of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "models" / "demo.onnx"
MANIFEST = ROOT / "models" / "demo.json"
NAME = "demo"
SEED = 0
COMMON = {"num_cameras": 3, "width": 960, "height": 540, "jitter_ms": 5.0}
DRIVES = {
    "train": [
        {"scenario": "mixed", "seed": 1, "seconds": 30.0, "fps": 10.0},
        {"scenario": "mixed", "seed": 2, "seconds": 15.0, "fps": 20.0},
        {"scenario": "mixed", "seed": 5, "seconds": 30.0, "fps": 10.0, "drop_prob": 0.05},
        {"scenario": "mixed", "seed": 6, "seconds": 30.0, "fps": 10.0},
        {"scenario": "lead_brake", "seed": 3, "seconds": 20.0, "fps": 10.0},
        {"scenario": "lead_brake", "seed": 7, "seconds": 20.0, "fps": 10.0},
        {"scenario": "crossing", "seed": 9, "seconds": 20.0, "fps": 10.0},
        {"scenario": "crossing", "seed": 10, "seconds": 20.0, "fps": 10.0},
    ],
    "val": [{"scenario": "mixed", "seed": 50, "seconds": 10.0, "fps": 10.0}],
    # held out: a scenario never trained on (cut_in), with its own seed
    "test": [{"scenario": "cut_in", "seed": 100, "seconds": 20.0, "fps": 10.0}],
    # unseen seeds of the trained scenarios (reported, not used for any decision)
    "unseen_seeds": [{"scenario": "mixed", "seed": 100, "seconds": 10.0, "fps": 10.0},
                     {"scenario": "lead_brake", "seed": 101, "seconds": 10.0, "fps": 10.0},
                     {"scenario": "crossing", "seed": 103, "seconds": 10.0, "fps": 10.0}],
}
TRAIN_ARGS = ["--epochs", "24", "--steps-per-epoch", "250", "--batch-size", "4", "--clip-length", "4",
              "--crop-width", "224", "--lr", "2e-3", "--warmup-steps", "200", "--patience", "6",
              "--seed", str(SEED), "--threads", "1", "--workers", "1", "--bf16"]


def cache() -> Path:
    from perception.model.dataset import default_cache_dir
    return default_cache_dir().parent / "demo"


def drive_path(spec: dict) -> Path:
    """The drive for `spec`, generated on first use (deterministic: same code + parameters, same bytes)."""
    from replay.synth import cached_drive

    return cached_drive(**COMMON, **spec)


def stage_data() -> None:
    for split, specs in DRIVES.items():
        for spec in specs:
            t0 = time.perf_counter()
            path = drive_path(spec)
            print(f"[{split}] {spec} -> {path} ({time.perf_counter() - t0:.0f} s)", flush=True)


def perception(*args: str) -> None:
    cmd = [sys.executable, "-m", "perception.cli", *args]
    print("+ perception " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_dir() -> Path:
    return cache() / "run"


def stage_train(resume: bool) -> None:
    args = ["train", "--drives", *map(str, map(drive_path, DRIVES["train"])),
            "--val-drives", *map(str, map(drive_path, DRIVES["val"])), "--out", str(run_dir()), "--name", NAME,
            *TRAIN_ARGS]
    perception(*args, *(["--resume"] if resume else []))


def stage_export() -> None:
    perception("export", str(run_dir() / "best.pt"), "--out", str(MODEL), "--name", NAME,
               "--check-drive", str(drive_path(DRIVES["test"][0])))


def stage_evaluate() -> None:
    import csv

    from perception.contract import load_model
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.model.checkpoint import read_checkpoint
    from perception.model.config import ModelConfig
    from perception.model.dataset import load_sequences
    from perception.model.evaluate import evaluate

    engine = OnnxRuntimeEngine(MODEL)
    cfg = ModelConfig.from_dict(read_checkpoint(run_dir() / "best.pt")["config"])
    metrics = {}
    for split in ("test", "val"):
        seqs = [s for spec in DRIVES[split] for s in load_sequences(drive_path(spec), cfg)]
        t0 = time.perf_counter()
        metrics[split] = evaluate(engine, seqs).as_dict()
        print(f"[{split}] {json.dumps(metrics[split])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    unseen = {}
    for spec in DRIVES["unseen_seeds"]:
        unseen[f"{spec['scenario']}-{spec['seed']}"] = evaluate(engine, load_sequences(drive_path(spec), cfg)).as_dict()
    with (run_dir() / "log.csv").open() as f:
        log = list(csv.DictReader(f))
    best = read_checkpoint(run_dir() / "best.pt")
    data = MODEL.read_bytes()
    drives = {split: [{**spec, "file": drive_path(spec).name,
                       "sha256": hashlib.sha256(drive_path(spec).read_bytes()).hexdigest()} for spec in specs]
              for split, specs in DRIVES.items()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    manifest = {
        "model": MODEL.name, "model_id": load_model(MODEL).contract.model_id,
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "command": "python models/build_demo.py",
        "train_command": "perception train --drives <train drives> --val-drives <val drive> --out <run> --name "
                         f"{NAME} " + " ".join(TRAIN_ARGS),
        "seeds": {"training": SEED, "drives": {split: [s["seed"] for s in specs] for split, specs in DRIVES.items()}},
        "data": {"generator": "replay.synth.cached_drive", "common": COMMON, "drives": drives,
                 "held_out": "test = scenario 'cut_in' (not in training) with its own seed"},
        "code_commit": commit,
        "config": best["config"], "best_epoch": best["epoch"], "epochs_run": len(log),
        "training_seconds": round(sum(float(r["seconds"]) for r in log)),
        "metrics": {"held_out_test": metrics["test"], "validation": metrics["val"], "unseen_seeds": unseen,
                    "protocol": "perception/eval, moderate level (docs/evaluation.md)"},
        "targets": {"AP@0.5/car": 0.8, "AP@0.5/pedestrian": 0.6, "range_rel_error_median_under_40m": 0.05},
        "environment": {"python": platform.python_version(), "machine": platform.machine()},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, default=float) + "\n")
    print(f"wrote {MANIFEST}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("all", "data", "train", "export", "evaluate"), default="all")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    args = parser.parse_args()
    if args.stage in ("all", "data"):
        stage_data()
    if args.stage in ("all", "train"):
        stage_train(args.resume)
    if args.stage in ("all", "export"):
        stage_export()
    if args.stage in ("all", "evaluate"):
        stage_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
