"""`perception synth --out drive.mcap [--scenario S --seed N ...]`: write a synthetic drive with ground truth."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from replay.synth import IMAGE_FORMATS, SCENARIOS

    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="MCAP drive to write")
    parser.add_argument("--scenario", default="mixed", choices=list(SCENARIOS),
                        help="what happens (docs/synth.md); default: mixed")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second per camera (default 10)")
    parser.add_argument("--cameras", type=int, default=3, metavar="N",
                        help="first N cameras of the default rig: front, front_left, front_right, rear, "
                             "side_left, side_right (default 3; ignored with --rig)")
    parser.add_argument("--rig", type=Path, metavar="FILE", help="use this rig file instead of the default rig")
    parser.add_argument("--width", type=int, help="render every camera at this width (intrinsics scaled)")
    parser.add_argument("--height", type=int, help="render every camera at this height (intrinsics scaled)")
    parser.add_argument("--format", dest="image_format", default="jpeg", choices=IMAGE_FORMATS,
                        help="image encoding in the drive (default jpeg)")
    parser.add_argument("--jpeg-quality", type=int, default=90, metavar="Q", help="1..100 (default 90)")
    parser.add_argument("--drop-prob", type=float, default=0.0, metavar="P",
                        help="probability that a camera frame is dropped (default 0)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, metavar="MS",
                        help="capture times spread uniformly over +-MS around each tick (default 0)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from calib.rig import load_rig
    from replay.synth import SynthConfig, generate_drive

    config = SynthConfig(seed=args.seed, seconds=args.seconds, fps=args.fps, num_cameras=args.cameras,
                         scenario=args.scenario, width=args.width, height=args.height,
                         image_format=args.image_format, jpeg_quality=args.jpeg_quality,
                         drop_prob=args.drop_prob, jitter_ms=args.jitter_ms,
                         rig=load_rig(args.rig) if args.rig else None)
    started = time.perf_counter()
    with tqdm(total=config.num_frames, unit="tick", desc="synth", file=sys.stderr, disable=None) as bar:
        summary = generate_drive(args.out, config, progress=lambda done, total: bar.update(1))
    for line in summary.lines():
        print(line)
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return 0
