"""Temporal CNN latency through ONNX Runtime: streaming state vs recomputing the window, side by side.

One step = one frame set of N cameras (default 3) -> heads + new state, via `OnnxRuntimeEngine.run`.

- streaming:      one backbone pass per frame; the last K-1 frames' features come from the state
- streaming+iob:  the same with IOBinding (outputs written into preallocated arrays)
- graph as exported: streaming without the engine's exact graph rewrites (perception/engine/ort_graph.py:
                  convolutions of concatenations split into summed partial convolutions)
- recompute K:    no state carried between frame sets: the K-frame window is recomputed every frame
                  (K steps from a reset state; same outputs as streaming, tests/test_model.py)
- floor:          the graph's convolution multiply-accumulates x 2 / the best float32 GEMM rate ONNX
                  Runtime reaches here (same thread count): what the arithmetic alone costs at full speed

Variants take turns within every round, so load from other processes hits them alike. Engines are made
with the default `spin=False` (idle ONNX Runtime threads sleep): with spinning, one session's idle threads
would steal the cores from the next variant.

- baseline:       with `--baseline OTHER.onnx`, that model streaming the same frames, interleaved too, with
                  and without the rewrites (the ratio is the engine-time target of a replacement model)

    python benchmarks/model.py [--model models/demo.onnx] [--baseline old.onnx] [--cameras 3] [--runs 200]
                               [--threads 1 2]

Every variant runs at each `--threads` count (ONNX Runtime intra-op threads; the node's default is 1, the
pipelined loop's other stages taking the other cores).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def graph_size(path: Path) -> tuple[int, int]:
    """(multiply-accumulates of the convolutions for one camera, parameters) from the ONNX graph."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_model(str(path))
    for v in model.graph.input:
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:  # Q/DQ models: a convolution's weights come through a DequantizeLinear
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]].dims                     # [Cout, Cin/groups, kh, kw]
            out = shapes[node.output[0]]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return macs, params


def gemm_flops(threads: int, n: int = 1024, runs: int = 20) -> float:
    """float32 FLOP/s of a large matrix product in ONNX Runtime (the MLAS kernels the convolutions use),
    with the same intra-op thread count."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    feed = {"a": a, "b": a}
    session.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def main() -> int:
    from perception.engine.onnxruntime import OnnxRuntimeEngine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.onnx")
    parser.add_argument("--baseline", type=Path, help="another model timed side by side (streaming)")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="ONNX Runtime intra-op thread counts, each timed (interleaved with the others)")
    args = parser.parse_args()

    c = OnnxRuntimeEngine(args.model).contract
    if args.baseline is not None:
        b = OnnxRuntimeEngine(args.baseline).contract
        if (b.input_height, b.input_width) != (c.input_height, c.input_width):
            parser.error(f"--baseline {args.baseline}: input {b.input_width}x{b.input_height}, the model's is "
                         f"{c.input_width}x{c.input_height}")
    n, k = args.cameras, c.window
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((n, 3, c.input_height, c.input_width), dtype=np.float32) for _ in range(8)]
    period_ns = 50_000_000
    clock = {"t": 0}
    states: dict[tuple[int, str], object] = {}  # by (threads, variant), as `variants`

    def stream(key: tuple[int, str], engine: OnnxRuntimeEngine) -> None:
        clock["t"] += period_ns
        _, states[key] = engine.run(frames[clock["t"] // period_ns % 8], np.full(n, clock["t"]), states[key])

    def recompute(engine: OnnxRuntimeEngine) -> None:
        state = engine.initial_state(n)
        for j in range(k):                       # the window's K frames, oldest first, from a reset
            t = clock["t"] - (k - 1 - j) * period_ns
            _, state = engine.run(frames[(t // period_ns) % 8], np.full(n, t), state)

    variants = {}
    for threads in args.threads:
        plain = OnnxRuntimeEngine(args.model, threads=threads)
        bound = OnnxRuntimeEngine(args.model, threads=threads, io_binding=True)
        engines = {"streaming": plain, "streaming+iob": bound,
                   "streaming, graph as exported": OnnxRuntimeEngine(args.model, threads=threads, rewrite=False)}
        if args.baseline is not None:
            engines[f"baseline {args.baseline.name} streaming"] = OnnxRuntimeEngine(args.baseline, threads=threads)
            engines[f"baseline {args.baseline.name} streaming, graph as exported"] = OnnxRuntimeEngine(
                args.baseline, threads=threads, rewrite=False)
        for name, engine in engines.items():
            states[(threads, name)] = engine.initial_state(n)
            variants[(threads, name)] = lambda key=(threads, name), e=engine: stream(key, e)
        variants[(threads, f"recompute K={k}")] = lambda e=plain: recompute(e)
    for fn in variants.values():
        for _ in range(3):
            fn()
    samples: dict[tuple[int, str], list[float]] = {key: [] for key in variants}
    for _ in range(args.runs):
        for key, fn in variants.items():
            t = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - t)

    macs, params = graph_size(args.model)
    print(f"model {args.model.name} ({c.model_id}): input {c.input_width}x{c.input_height}, window K={k}, "
          f"{macs / 1e9:.3f} GMAC = {2 * macs / 1e9:.3f} GFLOP per camera-frame, {params / 1e6:.3f} M parameters")
    print(f"{n} cameras per step, ONNX Runtime CPU, {args.runs} runs, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs\n")
    print("| threads | variant | p50 ms | p99 ms | p50 / streaming | frames/s (p50) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for threads in args.threads:
        base = np.median(samples[(threads, "streaming")]) * 1e3
        for (t, name), s in samples.items():
            if t != threads:
                continue
            p50, p99 = np.median(s) * 1e3, np.percentile(s, 99) * 1e3
            print(f"| {threads} | {name} | {p50:.2f} | {p99:.2f} | {p50 / base:.2f}x | {1e3 / p50:.1f} |")
        floor_ms = 2 * macs * n / gemm_flops(threads) * 1e3
        print(f"| {threads} | floor (GEMM rate) | {floor_ms:.2f} | | {floor_ms / base:.2f}x | {1e3 / floor_ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
