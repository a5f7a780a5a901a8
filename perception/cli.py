"""The `perception` command: one entry point, one module per subcommand, one exit-code policy.

Each module in COMMANDS defines `add_arguments(parser)` and `run(args) -> int`. Only the chosen command's
module is imported (torch-only commands cost nothing elsewhere, and `perception run` works without torch);
modules keep heavy imports (torch, onnxruntime) inside `run` all the same, for `perception CMD --help`.

Exit codes, for every command (a command returns 0 or EXIT_FAILED; the rest is decided here):
  0 ok; 1 a regression or failed check (EXIT_FAILED); 2 bad input or config (argparse errors and any
  PerceptionError, its message on stderr, no traceback); 130 interrupted (Ctrl-C).
Logging is configured once, here: level from `--log-level` (or -v: info, -vv: debug; default warning),
lines `time level logger: message` on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib import metadata

from perception.errors import PerceptionError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("perception.commands.train", "train the temporal CNN on drives with ground truth"),
    "export": ("perception.commands.export", "export a checkpoint to ONNX with its contract (parity-checked)"),
    "prune": ("perception.commands.prune", "prune a checkpoint's channels, fine-tune it by distillation, export it"),
    "run": ("perception.commands.run", "run the node (default: demo model on the bundled synthetic drive)"),
    "replay": ("perception.commands.replay", "replay drives into run files, compare with golden runs, report"),
    "calib": ("perception.commands.calib", "camera calibration tools (chessboard intrinsics)"),
    "echo": ("perception.commands.echo", "print the messages a node publishes (ZeroMQ), readably"),
    "quantize": ("perception.commands.quantize", "make an fp16 or int8 (Q/DQ, calibrated on drives) copy of a model"),
    "build-engine": ("perception.commands.build_engine", "build the TensorRT engine of a model for this GPU and exit"),
    "synth": ("perception.commands.synth", "generate a synthetic drive (MCAP) with exact ground truth"),
    "index": ("perception.commands.index", "index runs and drives for scenario search (DuckDB, Parquet)"),
    "search": ("perception.commands.search", "find moments in indexed drives: query, SQL or by example"),
    "autolabel": ("perception.commands.autolabel", "label videos or drives with a teacher model; review and correct"),
}


def version() -> str:
    try:
        return metadata.version("perception")
    except metadata.PackageNotFoundError:   # run from a checkout that is not installed
        return "unknown (not installed)"


def _logging_options(suppress: bool) -> argparse.ArgumentParser:
    """--log-level / -v, accepted before and after the command (after it, only when given)."""
    default = argparse.SUPPRESS if suppress else None
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                         help="log level (default warning; overrides -v)")
    options.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS if suppress else 0,
                         help="more log output: -v info, -vv debug")
    return options


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that command's arguments are loaded (its module imported)."""
    parser = argparse.ArgumentParser(prog="perception", description=__doc__.splitlines()[0],
                                     parents=[_logging_options(suppress=False)])
    parser.add_argument("--version", action="version", version=f"perception {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[_logging_options(suppress=True)])
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _command_of(argv: list[str]) -> str | None:
    _, rest = _logging_options(suppress=False).parse_known_args(argv)
    return next((a for a in rest if not a.startswith("-")), None)


def configure_logging(level: str | None, verbose: int = 0) -> None:
    name = level or ("debug" if verbose >= 2 else "info" if verbose == 1 else "warning")
    logging.basicConfig(level=getattr(logging, name.upper()), format=LOG_FORMAT, stream=sys.stderr, force=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_of(argv)).parse_args(argv)   # exits 2 on bad arguments, 0 on --help
    configure_logging(args.log_level, args.verbose)
    try:
        code = int(args._run(args) or EXIT_OK)
    except PerceptionError as e:
        print(f"perception {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"perception {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if code not in (EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED):
        raise ValueError(f"perception {args.command} returned exit code {code}; the policy allows 0, 1, 2, 130")
    return code


if __name__ == "__main__":
    sys.exit(main())
