"""`perception autolabel`: label videos or drives with a teacher model; review; correct (docs/autolabel.md).

    perception autolabel INPUT... --teacher M.onnx [--teacher-card CARD.yaml] --out LABELLED.mcap
                         [--every K] [--start S] [--end S] [--corrections corr.yaml] [--config cleaning.yaml]
    perception autolabel review LABELLED.mcap --out review.html [--corrections-template corr.yaml]
    perception autolabel evaluate DRIVE... --teacher M.onnx [--config cleaning.yaml] [--level moderate]

INPUT: a video file (its one camera: the default uncalibrated camera, docs/drive_format.md), a drive
(MCAP) or a ROS 2 bag. One INPUT: `--out` is the labelled drive; several: `--out` is a folder and each
becomes `<folder>/<stem>.mcap`. The teacher: any model the node runs (the bundled temporal model, or a
plug-in detector with its model card, e.g. YOLOX). Example on the shared dashcam clip (its first 2 s):

    perception autolabel ../shared/data/dashcam/solidWhiteRight.mp4 \\
        --teacher ../shared/data/models/yolox_nano.onnx --teacher-card models/yolox_nano.card.yaml \\
        --out /tmp/swr.mcap --end 2
    perception autolabel review /tmp/swr.mcap --out /tmp/swr.html --corrections-template /tmp/corr.yaml
    # edit /tmp/corr.yaml, then the same first command with --corrections /tmp/corr.yaml

`evaluate` measures what cleaning buys on drives with exact labels (synthetic drives): the teacher's
boxes and the cleaned labels against the drive's ground truth, a Markdown table (docs/autolabel.md).

Exit codes: 0 fine, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.usage = ("perception autolabel INPUT... --teacher M.onnx --out OUT [options]\n"
                    "       perception autolabel review LABELLED.mcap --out review.html\n"
                    "       perception autolabel evaluate DRIVE... --teacher M.onnx")
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="...", help=argparse.SUPPRESS)


def _common(p: argparse.ArgumentParser) -> None:
    """Teacher, frame selection and cleaning options, shared by labelling and evaluation."""
    p.add_argument("--teacher", required=True, type=Path, metavar="M.onnx", help="the teacher model")
    p.add_argument("--teacher-card", type=Path, metavar="CARD.yaml",
                   help="model card of a plug-in teacher (default: beside the model or in its metadata)")
    p.add_argument("--every", type=int, default=1, metavar="K", help="label every K-th frame of each camera")
    p.add_argument("--start", type=float, metavar="S", help="first second to label (from the first frame)")
    p.add_argument("--end", type=float, metavar="S", help="label up to this second (exclusive)")
    p.add_argument("--cameras", nargs="+", help="cameras of a drive to label (default all)")
    p.add_argument("--config", type=Path, metavar="cleaning.yaml",
                   help="cleaning settings (keys of perception.autolabel.clean.CleaningConfig)")
    p.add_argument("--threads", type=int, help="teacher threads (default: ONNX Runtime's)")


def _label_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception autolabel")
    p.add_argument("inputs", nargs="+", metavar="INPUT", type=Path, help="video files, drives (MCAP) or ROS 2 bags")
    p.add_argument("--out", required=True, type=Path, help="labelled drive (one INPUT) or folder (several)")
    _common(p)
    p.add_argument("--corrections", type=Path, metavar="corr.yaml", help="apply these corrections (one INPUT)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of the copied frames (default 90)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="label the inputs as Ray tasks (ADDRESS, 'auto', or none: a local Ray; docs/fleet.md)")
    return p


def _evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception autolabel evaluate")
    p.add_argument("drives", nargs="+", metavar="DRIVE", type=Path, help="drives with exact ground truth")
    _common(p)
    p.add_argument("--level", default="moderate", choices=("easy", "moderate", "hard"),
                   help="difficulty level of the evaluation protocol (default moderate)")
    return p


def _review_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception autolabel review")
    p.add_argument("labelled", type=Path, metavar="LABELLED.mcap")
    p.add_argument("--out", required=True, type=Path, metavar="review.html")
    p.add_argument("--frames", type=int, default=60, help="frames in the contact sheet (default 60)")
    p.add_argument("--corrections-template", type=Path, metavar="corr.yaml",
                   help="also write a corrections file listing every track (commented out)")
    return p


def run(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if not argv:
        argv = ["--help"]
    if argv[0] == "review":
        return _review(_review_parser().parse_args(argv[1:]))
    if argv[0] == "evaluate":
        return _evaluate(_evaluate_parser().parse_args(argv[1:]))
    return _label(_label_parser().parse_args(argv))


def _options(args: argparse.Namespace):
    from perception.autolabel.clean import CleaningConfig
    from perception.autolabel.pipeline import LabelOptions
    from perception.errors import ConfigError

    cleaning = CleaningConfig()
    if args.config is not None:
        from perception.yaml_io import load_yaml

        cleaning = CleaningConfig.from_dict(load_yaml(args.config, 1 << 20, ConfigError), str(args.config))
    return LabelOptions(cleaning, args.start, args.end, args.every, tuple(args.cameras) if args.cameras else None,
                        getattr(args, "jpeg_quality", 90), args.threads, args.teacher_card)


def _label(args: argparse.Namespace) -> int:
    from perception.autolabel.corrections import load_corrections
    from perception.autolabel.pipeline import label_recording
    from perception.errors import ConfigError

    options = _options(args)
    if len(args.inputs) > 1 and args.corrections is not None:
        raise ConfigError("autolabel: --corrections belongs to one labelled recording; give one INPUT")
    if len(args.inputs) == 1:
        outs = [args.out]
    else:
        stems = [p.stem for p in args.inputs]
        if len(set(stems)) != len(stems):
            raise ConfigError(f"autolabel: inputs must have distinct names for {args.out}/<name>.mcap, got {stems}")
        args.out.mkdir(parents=True, exist_ok=True)
        outs = [args.out / f"{stem}.mcap" for stem in stems]
    corrections = load_corrections(args.corrections) if args.corrections is not None else None
    if args.ray is not None:
        return _label_on_ray(args, outs, options, corrections)
    for recording, out in zip(args.inputs, outs):
        result = label_recording(recording, args.teacher, out, options, corrections, _progress(recording.name))
        print(f"{recording} -> {out} (teacher {result.teacher_id})")
        for line in result.lines():
            print(f"  {line}")
    return 0


def _label_on_ray(args: argparse.Namespace, outs: list[Path], options, corrections) -> int:
    """One Ray task per input (replay/fleet/pool.py); a failed input is reported and the others go on."""
    from perception.autolabel.pipeline import label_recording
    from replay.fleet.pool import map_drives

    outcomes: dict = {}
    map_drives(label_recording, [(r, args.teacher, o, options, corrections) for r, o in zip(args.inputs, outs)],
               on_result=outcomes.__setitem__, use_ray=True, ray_address=None if args.ray == "local" else args.ray)
    failed = 0
    for i, (recording, out) in enumerate(zip(args.inputs, outs)):
        result = outcomes[i]
        if isinstance(result, BaseException):
            print(f"perception autolabel: error: {recording}: {result}", file=sys.stderr)
            failed += 1
            continue
        print(f"{recording} -> {out} (teacher {result.teacher_id})")
        for line in result.lines():
            print(f"  {line}")
    return 1 if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from perception.autolabel.evaluate import evaluate_cleaning, format_table
    from perception.eval import level_named

    options = _options(args)
    gains = [evaluate_cleaning(drive, args.teacher, options, level_named(args.level)) for drive in args.drives]
    print(format_table(gains))
    return 0


def _review(args: argparse.Namespace) -> int:
    from perception.autolabel.review import write_review

    summary = write_review(args.labelled, args.out, max_frames=args.frames, template=args.corrections_template)
    print(f"review: {args.out} ({summary})")
    if args.corrections_template is not None:
        print(f"corrections template: {args.corrections_template}")
    return 0


def _progress(name: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return lambda frames: tqdm(frames, desc=f"autolabel {name}", unit="frame", leave=False)
