"""FP32 vs FP16 vs INT8 (each calibration method) on a held-out synthetic drive: accuracy and ONNX Runtime
CPU latency, side by side in one run.

    python benchmarks/precision.py                          # models/demo.onnx
    python benchmarks/precision.py --model M.onnx --json out.json
    python benchmarks/precision.py --methods percentile --min-macs 128 256 --profile

Calibration drives and the held-out drive are synthetic (replay.synth, fixed seeds, generated on first use
into the cache): calibration on 'mixed' and 'lead_brake' traffic, evaluation on the 'crossing' scenario
with its own seed, the demo model's held-out test protocol (perception/model/evaluate.py: mAP@0.5 per
class with pycocotools, median relative range error of true positives under 40 m).

Latency: one 3-camera step (`Engine._infer`, the graph only), ONNX Runtime CPU with 1 intra-op thread,
variants interleaved round by round so machine load hits them alike; median wall time, median CPU time of
the calling thread (ORT runs a 1-thread session on it; less moved by other processes on a shared machine)
and the ratio to fp32 of each. INT8 comes in two flavours (perception/precision/int8.py): 'cpu' (uint8
activations, ONNX Runtime's fast x86 kernels) per calibration method, and 'tensorrt' (symmetric int8, what a
TensorRT engine runs, judged with its Q/DQ simulated) for the best method, whose CPU accuracy stands for the
TensorRT INT8 engine's; then both flavours of the best method with mixed precision (`--min-macs`: only
convolutions with >= K multiply-accumulates per output are int8). `--profile`: ONNX Runtime's per-op-type
kernel time (SessionOptions.enable_profiling) of fp32 and each cpu-flavour variant.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
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


def latency_ms(variants: dict[str, Path], sample: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """(median wall ms, median calling-thread CPU ms) of one step per variant."""
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    engines = {name: OnnxRuntimeEngine(path, threads=1, providers=["CPUExecutionProvider"])
               for name, path in variants.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for name, engine in engines.items():
        engine._infer(sample)                    # warm-up
    for _ in range(rounds):
        for name, engine in engines.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            engine._infer(sample)
            times[name].append((time.perf_counter() - t0, time.thread_time() - c0))
    return {name: tuple(1000 * float(np.median(column)) for column in zip(*t)) for name, t in times.items()}


def kernel_ms_by_op(path: Path, sample: dict, runs: int) -> dict[str, float]:
    """ONNX Runtime's profile of `runs` steps (1 thread, after 3 warm-up steps): kernel ms per step by op type."""
    import onnxruntime as ort

    from perception.model_card import load_any_model

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="perception-profile-") as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(load_any_model(path).data, options, providers=["CPUExecutionProvider"])
        for _ in range(3 + runs):
            session.run(None, sample)
        events = json.loads(Path(session.end_profiling()).read_text())
    steps = [e for e in events if e.get("name") == "model_run"]
    measured_from = steps[2]["ts"] + steps[2]["dur"]
    by_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > measured_from:
            by_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    return dict(by_op)


def print_profile(variants: dict[str, Path], sample: dict, runs: int = 20, rows: int = 14) -> None:
    profiles = {name: kernel_ms_by_op(path, sample, runs) for name, path in variants.items()}
    ops = sorted({op for p in profiles.values() for op in p}, key=lambda op: -max(p.get(op, 0) for p in profiles.values()))
    print("\nONNX Runtime kernel ms per 3-camera step by op type (1 thread, mean of "
          f"{runs} profiled steps)\n| op | " + " | ".join(profiles) + " |\n|" + " --- |" * (len(profiles) + 1))
    for op in ops[:rows]:
        print(f"| {op} | " + " | ".join(f"{p.get(op, 0):.2f}" for p in profiles.values()) + " |")
    print("| all kernels | " + " | ".join(f"{sum(p.values()):.2f}" for p in profiles.values()) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.onnx")
    parser.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--samples", type=int, default=64, help="calibration frame sets")
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds")
    parser.add_argument("--seconds", type=float, default=HELD_OUT["seconds"], help="held-out drive length")
    parser.add_argument("--min-macs", type=int, nargs="*", default=[128, 256], metavar="K",
                        help="mixed-precision rows of the best method, both flavours (default 128 256; none: no rows)")
    parser.add_argument("--profile", action="store_true", help="print ORT's kernel time by op type per cpu variant")
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
        results[trt_name] = evaluate(OnnxRuntimeEngine(variants[trt_name], threads=1, simulate_qdq=True),
                                     sequences).as_dict()
        for k in args.min_macs:
            for target in ("cpu", "tensorrt"):
                name = f"int8 {best} mixed K>={k}" + (" (tensorrt)" if target == "tensorrt" else "")
                variants[name] = Path(tmp) / f"model.int8.mixed{k}.{target}.onnx"
                quantize_int8(args.model, variants[name], calib.samples, best, target=target, min_macs=k)
                engine = OnnxRuntimeEngine(variants[name], threads=1, simulate_qdq=target == "tensorrt")
                results[name] = evaluate(engine, sequences).as_dict()
                print(f"  {name}: mAP@0.5 {results[name]['mAP@0.5']:.4f}", flush=True)
        sample = next(s for s in calib.samples[1:] if s["images"].shape[0] == 3)
        latency = latency_ms(variants, sample, args.rounds)
        if args.profile:
            print_profile({n: p for n, p in variants.items() if n == "fp32" or (n.startswith("int8") and "tensorrt" not in n)},
                          sample)

    base_map, (base_ms, base_cpu) = results["fp32"]["mAP@0.5"], latency["fp32"]
    header = ("| model | mAP@0.5 | drop (points) | " + " | ".join(f"AP {c}" for c in CLASS_COLUMNS)
              + " | range err <40 m | ORT CPU ms (3 cams, 1 thread) | speed vs fp32 | thread CPU ms | CPU speed vs fp32 |")
    print("\n" + header + "\n|" + " --- |" * (header.count("|") - 1))
    for name, r in results.items():
        aps = " | ".join(f"{r.get(f'AP@0.5/{c}', float('nan')):.3f}" for c in CLASS_COLUMNS)
        wall, cpu = latency[name]
        print(f"| {name} | {r['mAP@0.5']:.4f} | {100 * (base_map - r['mAP@0.5']):+.2f} | {aps} | "
              f"{r['range_rel_error_median_under_40m']:.3f} | {wall:.1f} | {base_ms / wall:.2f}x | {cpu:.1f} | "
              f"{base_cpu / cpu:.2f}x |")
    print("(tensorrt rows: accuracy with the Q/DQ simulated, latency of ORT's fused kernels)")
    print(f"\nbest calibration method by held-out mAP: {best} (percentile = {DEFAULT_PERCENTILE:g}); model "
          f"{contract.model_id}, {len(calib.samples)} calibration frame sets, latency median of {args.rounds} rounds")
    if args.json:
        args.json.write_text(json.dumps({"model": contract.model_id, "results": results, "latency_ms": latency,
                                         "best_method": best, "calibration": calib.describe(),
                                         "held_out": {**COMMON, **HELD_OUT, "seconds": args.seconds}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
