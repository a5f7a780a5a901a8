"""`perception quantize MODEL.onnx --out OUT.onnx`: float16 conversion, or INT8 Q/DQ calibrated on drives.

    perception quantize demo.onnx --precision int8 --drives a.mcap b.mcap --method percentile --out demo.int8.onnx
    perception quantize demo.onnx --precision int8 --drives a.mcap b.mcap --min-macs 128 --out demo.mixed.onnx
    perception quantize demo.onnx --precision fp16 --out demo.fp16.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from perception.precision.int8 import DEFAULT_METHOD, DEFAULT_PERCENTILE, METHODS, TARGETS

    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="float32 model from `perception export`")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.onnx", help="where to write the new model")
    parser.add_argument("--precision", choices=("int8", "fp16"), default="int8")
    parser.add_argument("--drives", nargs="+", type=Path, metavar="DRIVE",
                        help="int8: recorded drives to calibrate on (MCAP drive, ROS 2 bag or videos)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=f"int8 calibration (default {DEFAULT_METHOD})")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE, help="percentile method: range kept")
    parser.add_argument("--target", choices=TARGETS, default="tensorrt",
                        help="tensorrt: symmetric int8 (TensorRT engines); cpu: uint8 activations (ONNX Runtime x86)")
    parser.add_argument("--min-macs", type=int, default=0, metavar="K",
                        help="int8: quantize only convolutions with >= K multiply-accumulates per output value "
                             "(input channels per group x kernel area); the rest stays float (default 0: all)")
    parser.add_argument("--samples", type=int, default=64, help="calibration frame sets in all (default 64)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="int8: stream the calibration drives on a Ray cluster (ADDRESS, 'auto', or none: local)")
    parser.add_argument("--every", type=int, default=2, help="keep every k-th frame set of a drive (default 2)")
    parser.add_argument("--cameras", nargs="+", metavar="NAME", help="cameras to use (default: all of the drive)")


def run(args: argparse.Namespace) -> int:
    from perception.errors import ConfigError

    if args.precision == "fp16":
        from perception.precision.fp16 import write_fp16

        contract = write_fp16(args.model, args.out)
        print(f"wrote {args.out} ({contract.model_id})")
        return 0
    if not args.drives:
        raise ConfigError("--precision int8 needs --drives to calibrate on")
    from perception.precision.calibration import calibration_set
    from perception.precision.int8 import quantize_int8

    spread = None
    if args.ray is not None:
        import functools

        from replay.fleet.pool import map_drives

        spread = functools.partial(map_drives, use_ray=True, ray_address=None if args.ray == "local" else args.ray)
    calib = calibration_set(args.model, args.drives, args.samples, args.every, args.cameras, spread=spread)
    print(f"calibrating on {len(calib.samples)} frame sets from {len(calib.drives)} drive(s) "
          f"({calib.frame_sets_run} streamed), method {args.method}")
    contract = quantize_int8(args.model, args.out, calib.samples, args.method, percentile=args.percentile,
                             target=args.target, min_macs=args.min_macs, details={"calibration": calib.describe()})
    print(f"wrote {args.out} ({contract.model_id})")
    return 0
