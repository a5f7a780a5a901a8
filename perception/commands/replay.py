"""`perception replay`: replay drives through the node, compare runs with golden runs, write reports.

    perception replay [run] DRIVE... --out RUN.mcap|DIR [--config NODE.yaml] [--jobs N] [--pacing P]
    perception replay compare GOLDEN.mcap RUN.mcap [--tolerances FILE.yaml] [--update-golden]
    perception replay report RUN.mcap --out report.html [--drive DRIVE] [--video overlay.mp4]

(docs/replay.md). Exit codes: 0 fine, 1 a drive failed / the run regressed, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUBCOMMANDS = ("run", "compare", "report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.usage = "perception replay {run,compare,report} ... (or: perception replay DRIVE... --out OUT)"
    parser.epilog = ("sub-commands (`perception replay SUB --help` for their options):\n"
                     "  run      replay drives through the node into run files (the default)\n"
                     "  compare  check a run against a golden run: tolerances, timing gates, diff; exit 1 on a "
                     "regression\n"
                     "  report   one HTML report of a run (metrics, plots, worst frames) and an overlay video")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="...", help=argparse.SUPPRESS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perception replay")
    sub = parser.add_subparsers(dest="sub", required=True)
    p = sub.add_parser("run", help="replay drives through the node into run files")
    p.add_argument("drives", nargs="+", metavar="DRIVE", type=Path, help="drive files (MCAP drive, ROS 2 bag)")
    p.add_argument("--out", required=True, type=Path,
                   help="run file (one drive, *.mcap) or folder: <folder>/<drive>.run.mcap and summary.json")
    p.add_argument("--config", type=Path, help="node YAML (default: the node's default configuration)")
    p.add_argument("--model", type=Path, help="ONNX model (overrides the configuration's): exported, or a plug-in "
                   "detector with a model card (docs/plugin_models.md)")
    p.add_argument("--jobs", type=int, help="drives replayed in parallel processes (default: CPU count)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="spread the drives over a Ray cluster (ADDRESS, 'auto', or none: a local Ray; docs/fleet.md)")
    p.add_argument("--pacing", choices=("lockstep", "realtime"), default="lockstep",
                   help="lockstep: every frame, deterministic (default); realtime: at the recorded rate, "
                        "dropping what the node cannot keep up with")
    p.add_argument("--copy-inputs", action="store_true",
                   help="copy the drive's images into the run (one self-contained file) instead of referencing it")

    p = sub.add_parser("compare", help="compare a run with a golden run; exit 1 on a regression")
    p.add_argument("golden", type=Path, metavar="GOLDEN.mcap")
    p.add_argument("run", type=Path, metavar="RUN.mcap")
    p.add_argument("--tolerances", type=Path, metavar="FILE.yaml", help="tolerances (default: built-in, "
                   "docs/replay.md)")
    p.add_argument("--update-golden", action="store_true", help="after showing the diff, replace GOLDEN by RUN")
    p.add_argument("--max-frames", type=int, default=30, help="frames with findings to print (default 30)")

    p = sub.add_parser("report", help="write an HTML report (and an overlay video) of a run")
    p.add_argument("run", type=Path, metavar="RUN.mcap")
    p.add_argument("--out", required=True, type=Path, metavar="report.html")
    p.add_argument("--drive", type=Path, help="the drive the run was replayed from (default: copied inputs, "
                   "or the drive the run names)")
    p.add_argument("--video", type=Path, metavar="overlay.mp4", help="also write the overlay video")
    return parser


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")
    if not argv:
        argv = ["--help"]
    parsed = _parser().parse_args(argv)
    return {"run": _run, "compare": _compare, "report": _report}[parsed.sub](parsed)


def _run(args: argparse.Namespace) -> int:
    import functools

    from replay.runner import replay_drive
    from replay.runner_pool import replay_drives

    config = None
    if args.config is not None:
        from perception.node.config import load_config

        config = load_config(args.config)
    if args.model is not None:
        import dataclasses

        from perception.node.config import NodeConfig

        config = dataclasses.replace(config or NodeConfig(), model=str(args.model))
    replay = functools.partial(replay_drive, pacing=args.pacing, copy_inputs=args.copy_inputs,
                               progress=len(args.drives) == 1 and sys.stderr.isatty())  # one drive: its frames
    summary = replay_drives(args.drives, args.out, config, args.jobs, replay=replay, progress=sys.stderr.isatty(),
                            use_ray=args.ray is not None, ray_address=None if args.ray in (None, "local") else args.ray)
    print(summary.table())
    if summary.summary_path is not None:
        print(f"summary: {summary.summary_path}")
    for r in summary.results:
        if not r.ok:
            print(f"perception replay: error: {r.drive}: {r.error}", file=sys.stderr)
    return 0 if summary.ok else 2   # a drive that cannot be replayed is bad input (the exit-code policy, cli.py)


def _compare(args: argparse.Namespace) -> int:
    from replay.compare import CompareConfig, compare_runs, format_diff, update_golden

    config = CompareConfig.load(args.tolerances) if args.tolerances is not None else CompareConfig()
    result = compare_runs(args.golden, args.run, config)
    print(format_diff(result, max_frames=args.max_frames))
    if args.update_golden:
        update_golden(args.golden, args.run)
        print(f"golden updated: {args.golden} now holds {args.run}")
        return 0
    return 0 if result.passed else 1


def _report(args: argparse.Namespace) -> int:
    from replay.report import build_report

    summary = build_report(args.run, args.out, drive=args.drive, video=args.video)
    print(f"report: {summary.html} ({summary.tiles} frames in the contact sheet)")
    if summary.video is not None:
        print(f"video: {summary.video} ({summary.video_frames} frames)")
    return 0
