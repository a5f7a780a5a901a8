"""The compression chain side by side: checkpoints and ONNX files (unpruned, pruned, INT8), one table.

    python benchmarks/compression.py RUN/best.pt PRUNED/best.pt PRUNED/model.int8.onnx
    python benchmarks/compression.py A.pt B.onnx --names teacher pruned-0.3 --rounds 50 --json out.json

Per model (a checkpoint is exported to a temporary ONNX file first, so every row is measured on what the
node runs):
  parameters   weights of the graph's convolutions (an INT8 model's quantized weights count once)
  GFLOP        2 x the convolutions' multiply-accumulates of one 3-camera step (ONNX shape inference)
  latency      ONNX Runtime CPU, 1 intra-op thread, one 3-camera streaming step (`Engine.run`), models
               interleaved round by round so machine load hits them alike; median, and speed vs the first row
  mAP          held-out synthetic drive (build_demo's test split: scenario cut_in, never trained on), the
               evaluation protocol's moderate level (perception/model/evaluate.py); an INT8 model made with
               `--target tensorrt` is judged with its Q/DQ run as float ops (what TensorRT computes), while
               its latency is ORT's CPU kernels
  real         the held-out thirds of the real clips against the teacher's boxes (models/build_demo.py
               real_footage_metrics: mAP@0.5, and node-threshold detections overlapping no teacher box per
               frame); needs ../shared/data, else 'not measured'
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

CAMERAS = 3


def to_onnx(path: Path, tmp: Path) -> Path:
    """The ONNX file of a checkpoint (exported, contract embedded) or the ONNX file itself."""
    if path.suffix == ".onnx":
        return path
    from perception.model.checkpoint import load_model
    from perception.model.export import export_onnx

    model, payload = load_model(path)
    out = tmp / f"{len(list(tmp.iterdir()))}-{path.stem}.onnx"
    export_onnx(model, out, str(payload["name"]))
    return out


def graph_size(path: Path, cameras: int = CAMERAS) -> tuple[int, float]:
    """(convolution weights, GFLOP of one `cameras`-camera step) from the graph, after shape inference with
    the camera batch fixed."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    for v in list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = cameras
    del model.graph.value_info[:]
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    inits = {i.name: tuple(numpy_helper.to_array(i).shape) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}

    def weight_shape(name: str) -> tuple[int, ...]:
        node = producers.get(name)
        while node is not None and node.op_type in ("DequantizeLinear", "Cast", "Identity"):
            name = node.input[0]
            node = producers.get(name)
        if name not in inits:
            raise ValueError(f"{path}: convolution weight {name} is not a constant")
        return inits[name]

    params, macs = 0, 0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = weight_shape(node.input[1])
        params += int(np.prod(w)) + (w[0] if len(node.input) > 2 and node.input[2] else 0)
        out = shapes.get(node.output[0])
        if not out or 0 in out:
            raise ValueError(f"{path}: no inferred shape for {node.output[0]}")
        macs += int(np.prod(out)) * int(np.prod(w[1:]))
    return params, 2 * macs / 1e9


def latency_ms(paths: dict[str, Path], rounds: int) -> dict[str, float]:
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    engines = {name: OnnxRuntimeEngine(p, threads=1, providers=["CPUExecutionProvider"]) for name, p in paths.items()}
    rng = np.random.default_rng(0)
    states, times = {}, {name: [] for name in engines}
    for name, e in engines.items():
        c = e.contract
        states[name] = e.initial_state(CAMERAS)
        images = rng.standard_normal((CAMERAS, 3, c.input_height, c.input_width)).astype(np.float32)
        _, states[name] = e.run(images, np.zeros(CAMERAS, np.int64), states[name])     # warm-up
    for r in range(rounds):
        t_ns = np.full(CAMERAS, (r + 1) * 100_000_000, np.int64)
        for name, e in engines.items():
            c = e.contract
            images = rng.standard_normal((CAMERAS, 3, c.input_height, c.input_width)).astype(np.float32)
            t0 = time.perf_counter()
            _, states[name] = e.run(images, t_ns, states[name])
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def accuracy(path: Path, held_out: list[Path], real: dict[str, Path]) -> dict:
    from perception.engine.onnxruntime import OnnxRuntimeEngine
    from perception.model.config import ModelConfig
    from perception.model.dataset import load_sequences
    from perception.model.evaluate import evaluate

    from perception.precision.metadata import read_precision

    # a TensorRT-targeted INT8 model is judged on what TensorRT computes (its Q/DQ as float ops), not on
    # ORT's fused integer kernels
    simulate = read_precision(path).details.get("target") == "tensorrt"
    engine = OnnxRuntimeEngine(path, threads=1, providers=["CPUExecutionProvider"], simulate_qdq=simulate)
    c = engine.contract
    cfg = ModelConfig(classes=c.classes, input_height=c.input_height, input_width=c.input_width, mean=c.mean,
                      std=c.std, stride=c.stride, window=c.window, feature_channels=c.state_shape[1],
                      max_age_s=c.max_age_s, depth_focal_px=c.depth_focal_px)
    out = {"held_out": evaluate(engine, [s for d in held_out for s in load_sequences(d, cfg)]).as_dict()}
    if real:
        from models.build_demo import real_footage_metrics

        out["real"] = {name: real_footage_metrics(engine, load_sequences(d, cfg)) for name, d in real.items()}
    return out


def real_drives() -> dict[str, Path]:
    """The real clips' held-out thirds (teacher-labelled on first use), or none without ../shared/data."""
    from models import build_demo

    if not build_demo.TEACHER.exists() or not all(v.exists() for v in build_demo.REAL_CLIPS.values()):
        return {}
    return {name: build_demo.real_drive(name, "held_out") for name in build_demo.REAL_CLIPS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL", help="checkpoints (.pt) or ONNX files")
    parser.add_argument("--names", nargs="+", help="row names (default: the file names)")
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds (default 30)")
    parser.add_argument("--held-out", nargs="+", type=Path, metavar="DRIVE",
                        help="held-out drives (default: build_demo's test split, generated on first use)")
    parser.add_argument("--no-real", action="store_true", help="skip the real-footage agreement")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    names = args.names or [str(p) for p in args.models]
    if len(names) != len(args.models):
        parser.error(f"{len(names)} names for {len(args.models)} models")
    missing = [str(p) for p in args.models if not p.is_file()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")

    from models import build_demo

    held_out = args.held_out or [build_demo.drive_path(spec) for spec in build_demo.DRIVES["test"]]
    real = {} if args.no_real else real_drives()
    with tempfile.TemporaryDirectory(prefix="perception-compression-") as tmp:
        paths = {name: to_onnx(p, Path(tmp)) for name, p in zip(names, args.models)}
        sizes = {name: graph_size(p) for name, p in paths.items()}
        latency = latency_ms(paths, args.rounds)
        results = {}
        for name, p in paths.items():
            t0 = time.perf_counter()
            results[name] = accuracy(p, held_out, real)
            print(f"  {name}: held-out mAP@0.5 {results[name]['held_out']['mAP@0.5']:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)

    first = names[0]
    real_cols = list(real)
    header = (f"| model | parameters | GFLOP ({CAMERAS} cams) | ORT CPU ms ({CAMERAS} cams, 1 thread) | speed | "
              "held-out mAP@0.5 | " + " | ".join(f"real {n} mAP@0.5 / unmatched per frame" for n in real_cols)
              + (" |" if real_cols else "real footage |"))
    print("\n" + header + "\n|" + " --- |" * (header.count("|") - 1))
    for name in names:
        params, gflop = sizes[name]
        r = results[name]
        cells = [f"{r['real'][n]['mAP@0.5']:.3f} / {r['real'][n]['unmatched_per_frame']:.2f}" for n in real_cols]
        print(f"| {name} | {params:,} | {gflop:.3f} | {latency[name]:.1f} | {latency[first] / latency[name]:.2f}x | "
              f"{r['held_out']['mAP@0.5']:.4f} | " + (" | ".join(cells) if cells else "not measured") + " |")
    print(f"\nheld out: {', '.join(p.name for p in held_out)}; latency median of {args.rounds} interleaved rounds")
    if args.json:
        args.json.write_text(json.dumps({"models": {n: str(p) for n, p in zip(names, args.models)}, "sizes": sizes,
                                         "latency_ms": latency, "results": results}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
