"""Validate the TensorRT path on a GPU machine in one command: build FP32 / FP16 / INT8 engines, check
them against ONNX Runtime on a synthetic drive, and time them.

    python tools/trt_validate.py                         # models/demo.onnx, engines in a temporary cache
    python tools/trt_validate.py --model M.onnx --cameras 3 --steps 40 --cuda-graph

Needs TensorRT 10.x / 11.x and pycuda (perception[gpu]); CUDA graphs also cuda-python. For each
precision the ONNX is made by perception.precision (INT8: symmetric Q/DQ, TensorRT's flavour, calibrated
on a synthetic drive through the node's preprocessing), the engine is built through the engine cache
(a second load must hit it), and both the engine and ONNX Runtime CPU stream the same frame sets of
another drive from a reset state. Parity (per head, relative to max(1, |reference|)):

    fp32  2e-2   TensorRT runs float32 convolutions as TF32 on Ampere and later
    fp16  3e-2   both sides float16, different kernels
    int8  heatmap 0.05 absolute, and >= 90 % of ONNX Runtime's detections found (same class, IoU >= 0.5)

Exit status 1 when a precision fails its parity check, 2 when TensorRT is unusable here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOLERANCE = {"fp32": 2e-2, "fp16": 3e-2}
INT8_HEATMAP_ABS, INT8_AGREEMENT = 0.05, 0.90


def make_variants(model: Path, out: Path, calib_drive: Path, samples: int) -> dict[str, Path]:
    from perception.precision.calibration import calibration_set
    from perception.precision.fp16 import write_fp16
    from perception.precision.int8 import DEFAULT_METHOD, quantize_int8

    variants = {"fp32": model, "fp16": out / "model.fp16.onnx", "int8": out / "model.int8.onnx"}
    write_fp16(model, variants["fp16"])
    calib = calibration_set(model, [calib_drive], samples, every=2)
    quantize_int8(model, variants["int8"], calib.samples, DEFAULT_METHOD, target="tensorrt",
                  details={"calibration": calib.describe()})
    return variants


def frame_sets(drive_path: Path, contract, steps: int) -> tuple[list, list]:
    from perception.precision.calibration import frame_set_inputs
    from perception.io.drive import open_drive

    drive = open_drive(drive_path)
    try:
        out = []
        for fs in frame_set_inputs(drive, contract):
            out.append(fs)
            if len(out) == steps:
                break
        return out, [drive.rig[n] for n in drive.cameras]
    finally:
        drive.close()


def stream(engine, sets, decoder) -> tuple[list[dict], list, list[float]]:
    state = engine.initial_state(len(sets[0].fresh))
    heads_out, dets, times = [], [], []
    for fs in sets:
        t0 = time.perf_counter()
        heads, state = engine.run(fs.images, fs.camera_t_ns, state, fs.fresh)
        times.append(time.perf_counter() - t0)
        heads_out.append(heads.as_dict())
        dets.append(decoder(heads, fs.fresh))
    return heads_out, dets, times


def agreement(ref: list, got: list) -> float:
    matched = total = 0
    for r, g in zip(ref, got):
        total += len(r)
        if len(r) and len(g):
            lo, hi = np.maximum(r.box[:, None, :2], g.box[None, :, :2]), np.minimum(r.box[:, None, 2:], g.box[None, :, 2:])
            inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
            area = lambda z: np.prod(z[:, 2:] - z[:, :2], axis=1)  # noqa: E731
            iou = inter / (area(r.box)[:, None] + area(g.box)[None] - inter)
            same = (r.cls[:, None] == g.cls[None]) & (r.camera[:, None] == g.camera[None])
            matched += int(((iou * same).max(1) >= 0.5).sum())
    return matched / total if total else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.onnx")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="frame sets streamed per engine")
    parser.add_argument("--samples", type=int, default=32, help="INT8 calibration frame sets")
    parser.add_argument("--cuda-graph", action="store_true", help="also time the CUDA-graph replay")
    parser.add_argument("--cache-dir", type=Path, help="engine cache (default: a temporary folder)")
    args = parser.parse_args()

    from perception.contract import load_model
    from perception.decode import DecodeConfig, Decoder
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.engine.tensorrt import TensorRTEngine, import_gpu
    from perception.engine.trt_cache import CameraProfile, EngineBuildError
    from perception.precision.calibration import node_tables
    from replay.synth import cached_drive

    if not args.model.is_file():
        parser.error(f"{args.model} does not exist (python models/build_demo.py builds the demo model)")
    try:
        import_gpu()
    except EngineBuildError as e:
        print(f"trt_validate: {e}", file=sys.stderr)
        return 2
    contract = load_model(args.model).contract
    common = {"num_cameras": args.cameras, "width": 960, "height": 540, "jitter_ms": 5.0}
    calib_drive = cached_drive(scenario="mixed", seed=201, seconds=10.0, fps=10.0, **common)
    test_drive = cached_drive(scenario="crossing", seed=100, seconds=max(3.0, args.steps / 10 + 1), fps=10.0, **common)
    sets, cameras = frame_sets(test_drive, contract, args.steps)
    decoder = Decoder(contract, node_tables(cameras, contract), DecodeConfig.for_classes(contract.classes, 0.3))
    profile = CameraProfile(1, args.cameras, max(args.cameras, 6))
    failures = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="perception-trt-") as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "engines"
        variants = make_variants(args.model, Path(tmp), calib_drive, args.samples)
        for precision, path in variants.items():
            try:
                t0 = time.perf_counter()
                engine = TensorRTEngine(path, profile=profile, cache_dir=cache_dir, progress=print)
                build_s = time.perf_counter() - t0
                again = TensorRTEngine(path, profile=profile, cache_dir=cache_dir, allow_build=False)
            except EngineBuildError as e:
                print(f"{precision}: {e}", file=sys.stderr)
                return 2
            assert not again.built, "the second load must come from the engine cache"
            ref_heads, ref_dets, ort_times = stream(OnnxRuntimeEngine(path), sets, decoder)
            heads, dets, trt_times = stream(engine, sets, decoder)
            worst = {k: max(float(np.max(np.abs(h[k] - r[k]) / np.maximum(1.0, np.abs(r[k])))) for h, r in zip(heads, ref_heads))
                     for k in ref_heads[0]}
            agree = agreement(ref_dets, dets)
            if precision == "int8":
                hm = max(float(np.abs(h["heatmap"] - r["heatmap"]).max()) for h, r in zip(heads, ref_heads))
                ok = hm <= INT8_HEATMAP_ABS and agree >= INT8_AGREEMENT
                check = f"heatmap |d| {hm:.3f} <= {INT8_HEATMAP_ABS}, agreement {agree:.1%} >= {INT8_AGREEMENT:.0%}"
            else:
                ok = max(worst.values()) <= TOLERANCE[precision]
                check = f"max rel err {max(worst.values()):.2e} ({max(worst, key=worst.get)}) <= {TOLERANCE[precision]}"
            if not ok:
                failures.append(precision)
            graph_ms = float("nan")
            if args.cuda_graph:
                graphed = TensorRTEngine(path, profile=profile, cache_dir=cache_dir, allow_build=False, cuda_graph=True)
                graph_ms = 1000 * float(np.median(stream(graphed, sets, decoder)[2][2:]))
            rows.append((precision, "ok" if ok else "FAIL", check, build_s, 1000 * float(np.median(trt_times[2:])),
                         1000 * float(np.percentile(trt_times[2:], 99)), graph_ms, 1000 * float(np.median(ort_times[2:]))))
    print(f"\nmodel {contract.model_id}, {args.cameras} cameras, {len(sets)} frame sets, "
          f"TensorRT {engine.key.platform.trt_version} on {engine.key.platform.gpu_name}")
    print("| precision | parity | check | build s | TRT step p50 ms | p99 ms | CUDA graph p50 ms | ORT CPU p50 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.1f} |")
    print("(step = Engine.run with host images: upload, enqueue, heads download, state kept on the device)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
