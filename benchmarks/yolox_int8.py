"""YOLOX-Nano (the shared plug-in detector) INT8 against fp32 on the six dashcam stills, both targets, Q/DQ
fused by ONNX Runtime and simulated as float ops, with 1-thread ONNX Runtime CPU latency side by side.

    python benchmarks/yolox_int8.py                         # ../shared/data (skips nothing: needs it)
    python benchmarks/yolox_int8.py --samples 48 --method minmax

Calibration: frames of solidWhiteRight.mp4 through the node's preprocessing (perception.precision.calibration).
Agreement: fp32 boxes found again by the int8 model with IoU >= 0.7 and the same class (decode at 0.3).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.decode import DecodeConfig, make_decoder  # noqa: E402
from perception.engine.onnxruntime import open_detector  # noqa: E402
from perception.eval.detection import box_iou  # noqa: E402
from perception.frame import Frame  # noqa: E402
from perception.io.drive_common import default_camera  # noqa: E402
from perception.node.node import remap_tables  # noqa: E402
from perception.precision.calibration import calibration_set  # noqa: E402
from perception.precision.int8 import DEFAULT_METHOD, METHODS, quantize_int8  # noqa: E402
from perception.preprocess import FastPreprocessor  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def detect(path: Path, stills: list[np.ndarray], simulate_qdq: bool) -> tuple[list, float]:
    """Detections per still and the median engine time (ms)."""
    engine = open_detector(path, simulate_qdq=simulate_qdq, threads=1)
    out, times = [], []
    for image in stills:
        tables = remap_tables([default_camera("cam", image.shape[1], image.shape[0])], engine.contract)
        pre = FastPreprocessor(tables, engine.contract.normalization, np.float32)
        decode = make_decoder(engine.contract, tables, DecodeConfig.for_classes(engine.contract.classes, 0.3))
        batch = pre.run([Frame.from_bgr(image)])
        for _ in range(3):
            start = time.perf_counter()
            heads, _ = engine.run(batch, np.zeros(1, np.int64), engine.initial_state(1))
            times.append(time.perf_counter() - start)
        out.append(decode(heads))
    return out, float(np.median(times) * 1e3)


def matched(ref: list, got: list) -> int:
    return sum(int(((box_iou(r.box, g.box) >= 0.7) & (r.cls[:, None] == g.cls[None])).any(1).sum())
               for r, g in zip(ref, got) if len(r.box) and len(g.box))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--samples", type=int, default=24, help="calibration frames")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD)
    args = parser.parse_args()
    model = args.data / "models" / "yolox_nano.onnx"
    stills = [cv2.imread(str(p)) for p in sorted((args.data / "dashcam" / "highway_images").glob("*.jpg"))]
    samples = calibration_set(model, [args.data / "dashcam" / "solidWhiteRight.mp4"], max_samples=args.samples).samples
    ref, base_ms = detect(model, stills, False)
    total = sum(len(r.box) for r in ref)
    print(f"| model | Q/DQ | fp32 boxes kept | int8 boxes | ORT CPU ms | speed vs fp32 |\n| --- | --- | --- | --- | --- | --- |")
    print(f"| fp32 | - | {total}/{total} | {total} | {base_ms:.1f} | 1.00x |")
    with tempfile.TemporaryDirectory() as tmp:
        for target in ("cpu", "tensorrt"):
            out = Path(tmp) / f"yolox.{target}.onnx"
            quantize_int8(model, out, samples, args.method, target=target)
            for simulate in (False, True):
                got, ms = detect(out, stills, simulate)
                print(f"| int8 {args.method} {target} | {'simulated' if simulate else 'fused'} | "
                      f"{matched(ref, got)}/{total} | {sum(len(g.box) for g in got)} | {ms:.1f} | {base_ms / ms:.2f}x |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
