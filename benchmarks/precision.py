"""FP32 vs FP16 vs INT8 (each calibration method) on a held-out synthetic drive: accuracy and ONNX Runtime
CPU latency, side by side in one run.

    python benchmarks/precision.py                          # models/demo.onnx
    python benchmarks/precision.py --model M.onnx --json out.json

Calibration drives and the held-out drive are synthetic (replay.synth, fixed seeds, generated on first use
into the cache): calibration on 'mixed' and 'lead_brake' traffic, evaluation on the 'crossing' scenario
with its own seed, the demo model's held-out test protocol (perception/model/evaluate.py: mAP@0.5 per
class with pycocotools, median relative range error of true positives under 40 m).

Latency: one 3-camera step (`Engine._infer`, the graph only), ONNX Runtime CPU with 1 intra-op thread,
variants interleaved round by round so machine load hits them alike; median and ratio to fp32.
INT8 comes in two flavours (perception/precision/int8.py): 'cpu' (uint8 activations, ONNX Runtime's fast
x86 kernels) per calibration method, and 'tensorrt' (symmetric int8, what a TensorRT engine runs) for the
best method, whose CPU accuracy stands for the TensorRT INT8 engine's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMON = {"num_cameras": 3, "width": 960, "height": 540, "jitter_ms": 5.0}
CALIBRATION = [{"scenario": "mixed", "seed": 201, "seconds": 10.0, "fps": 10.0},
               {"scenario": "lead_brake", "seed": 202, "seconds": 10.0, "fps": 10.0}]
HELD_OUT = {"scenario": "crossing", "seed": 100, "seconds": 20.0, "fps": 10.0}
CLASS_COLUMNS = ("car", "truck", "pedestrian", "cyclist")


def build_variants(model: Path, out: Path, samples: list, methods: list[str], calib: dict) -> dict[str, Path]:
    from perception.precision.fp16 import write_fp16
    from perception.precision.int8 import quantize_int8

    variants = {"fp32": model, "fp16": out / "model.fp16.onnx"}
    write_fp16(model, variants["fp16"])
    for method in methods:
        variants[f"int8 {method}"] = out / f"model.int8.{method}.onnx"
        t0 = time.perf_counter()
        quantize_int8(model, variants[f"int8 {method}"], samples, method, target="cpu", details={"calibration": calib})
        print(f"  int8 {method}: calibrated in {time.perf_counter() - t0:.1f} s", flush=True)
    return variants


def latency_ms(variants: dict[str, Path], sample: dict, rounds: int) -> dict[str, float]:
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    engines = {name: OnnxRuntimeEngine(path, threads=1, providers=["CPUExecutionProvider"])
               for name, path in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for name, engine in engines.items():
        engine._infer(sample)                    # warm-up
    for _ in range(rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            engine._infer(sample)
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.onnx")
    parser.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--samples", type=int, default=64, help="calibration frame sets")
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds")
    parser.add_argument("--seconds", type=float, default=HELD_OUT["seconds"], help="held-out drive length")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if not args.model.is_file():
        parser.error(f"{args.model} does not exist (python models/build_demo.py builds the demo model)")

    from perception.contract import load_model
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.model.config import ModelConfig
    from perception.model.dataset import load_sequences
    from perception.model.evaluate import evaluate
    from perception.precision.calibration import calibration_set
    from perception.precision.int8 import DEFAULT_PERCENTILE, quantize_int8
    from replay.synth import cached_drive

    contract = load_model(args.model).contract
    cfg = ModelConfig(classes=contract.classes, input_height=contract.input_height, input_width=contract.input_width,
                      mean=contract.mean, std=contract.std, stride=contract.stride, window=contract.window,
                      feature_channels=contract.state_shape[1], max_age_s=contract.max_age_s)
    print("drives (generated on first use) ...", flush=True)
    calib_drives = [cached_drive(**COMMON, **spec) for spec in CALIBRATION]
    held_out = cached_drive(**COMMON, **{**HELD_OUT, "seconds": args.seconds})
    calib = calibration_set(args.model, calib_drives, args.samples, every=2, threads=1)
    print(f"calibration: {len(calib.samples)} frame sets; evaluating on {held_out.name}", flush=True)
    sequences = load_sequences(held_out, cfg)

    with tempfile.TemporaryDirectory(prefix="perception-precision-") as tmp:
        variants = build_variants(args.model, Path(tmp), calib.samples, args.methods, calib.describe())
        results: dict[str, dict] = {}
        for name, path in variants.items():
            t0 = time.perf_counter()
            results[name] = evaluate(OnnxRuntimeEngine(path, threads=1), sequences).as_dict()
            print(f"  {name}: mAP@0.5 {results[name]['mAP@0.5']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        best = max(args.methods, key=lambda m: results[f"int8 {m}"]["mAP@0.5"])
        trt_name = f"int8 {best} (tensorrt)"
        variants[trt_name] = Path(tmp) / "model.int8.trt.onnx"
        quantize_int8(args.model, variants[trt_name], calib.samples, best, target="tensorrt")
        results[trt_name] = evaluate(OnnxRuntimeEngine(variants[trt_name], threads=1), sequences).as_dict()
        sample = next(s for s in calib.samples[1:] if s["images"].shape[0] == 3)
        latency = latency_ms(variants, sample, args.rounds)

    base_map, base_ms = results["fp32"]["mAP@0.5"], latency["fp32"]
    header = ("| model | mAP@0.5 | drop (points) | " + " | ".join(f"AP {c}" for c in CLASS_COLUMNS)
              + " | range err <40 m | ORT CPU ms (3 cams, 1 thread) | speed vs fp32 |")
    print("\n" + header + "\n|" + " --- |" * (header.count("|") - 1))
    for name, r in results.items():
        aps = " | ".join(f"{r.get(f'AP@0.5/{c}', float('nan')):.3f}" for c in CLASS_COLUMNS)
        print(f"| {name} | {r['mAP@0.5']:.4f} | {100 * (base_map - r['mAP@0.5']):+.2f} | {aps} | "
              f"{r['range_rel_error_median_under_40m']:.3f} | {latency[name]:.1f} | {base_ms / latency[name]:.2f}x |")
    print(f"\nbest calibration method by held-out mAP: {best} (percentile = {DEFAULT_PERCENTILE:g}); model "
          f"{contract.model_id}, {len(calib.samples)} calibration frame sets, latency median of {args.rounds} rounds")
    if args.json:
        args.json.write_text(json.dumps({"model": contract.model_id, "results": results, "latency_ms": latency,
                                         "best_method": best, "calibration": calib.describe(),
                                         "held_out": {**COMMON, **HELD_OUT, "seconds": args.seconds}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
