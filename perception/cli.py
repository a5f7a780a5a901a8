"""The `perception` command: one entry point, one module per subcommand.

Each module in COMMANDS defines `add_arguments(parser)` and `run(args) -> int`, and keeps heavy imports
(torch, onnxruntime) inside `run` so that `perception --help` stays fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from perception.errors import PerceptionError

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("perception.commands.train", "train the temporal CNN on drives with ground truth"),
    "export": ("perception.commands.export", "export a checkpoint to ONNX with its contract (parity-checked)"),
    "run": ("perception.commands.run", "run the node (default: demo model on the bundled synthetic drive)"),
    "replay": ("perception.commands.replay", "replay drives into run files, compare with golden runs, report"),
    "calib": ("perception.commands.calib", "camera calibration tools (chessboard intrinsics)"),
    "echo": ("perception.commands.echo", "print the messages a node publishes (ZeroMQ), readably"),
    "quantize": ("perception.commands.quantize", "make an fp16 or int8 (Q/DQ, calibrated on drives) copy of a model"),
    "build-engine": ("perception.commands.build_engine", "build the TensorRT engine of a model for this GPU and exit"),
    "synth": ("perception.commands.synth", "generate a synthetic drive (MCAP) with exact ground truth"),
    "autolabel": ("perception.commands.autolabel", "label videos or drives with a teacher model; review and correct"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PerceptionError as e:
        print(f"perception {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
