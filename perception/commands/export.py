"""`perception export CHECKPOINT --out model.onnx`: single-file ONNX with its contract, parity-checked."""

from __future__ import annotations

import argparse
from pathlib import Path

PARITY_TOLERANCE = 1e-4   # |torch - onnxruntime| / max(1, |torch|), every output (velocity as displacement) and the state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="training checkpoint (best.pt / last.pt)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--name", help="model name in the model id (default: the checkpoint's)")
    parser.add_argument("--check-drive", type=Path, metavar="FILE",
                        help="check parity on this drive's first frames (default: a fixed synthetic batch)")
    parser.add_argument("--cameras", type=int, default=3, help="batch size of the parity check (default 3)")


def run(args: argparse.Namespace) -> int:
    import hashlib

    import numpy as np

    from perception.model.checkpoint import load_model
    from perception.model.export import export_onnx, max_parity_error, parity_inputs

    model, payload = load_model(args.checkpoint)
    contract = export_onnx(model, args.out, args.name or str(payload["name"]))
    images, t_ns = parity_inputs(model.cfg, args.cameras, args.check_drive)
    errors = max_parity_error(model, args.out, images, t_ns)
    data = args.out.read_bytes()
    print(f"wrote {args.out} ({len(data) / 2**20:.2f} MiB), model id {contract.model_id}")
    print(f"sha256 {hashlib.sha256(data).hexdigest()}")
    print(f"classes {list(contract.classes)}, input {contract.input_width}x{contract.input_height} RGB, "
          f"stride {contract.stride}, window {contract.window}, state {list(contract.state_shape)}")
    worst = max(errors.values())
    print(f"parity torch vs onnxruntime over {images.shape[0]} steps x {images.shape[1]} cameras "
          f"({'drive frames' if args.check_drive else 'synthetic frames'}): max relative error {worst:.2e} "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        print(f"parity check FAILED (tolerance {PARITY_TOLERANCE:g})")
        return 1
    return 0
