"""`perception calib`: camera calibration tools.

    perception calib chessboard IMAGES... --board 9x6 --square 0.025 --out rig.yaml [--name cam]
"""

from __future__ import annotations

import argparse
import sys


def _board(text: str) -> tuple[int, int]:
    try:
        columns, rows = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COLUMNSxROWS of inner corners, e.g. 9x6, got {text!r}") from None
    if columns < 2 or rows < 2:
        raise argparse.ArgumentTypeError(f"a board needs at least 2x2 inner corners, got {text!r}")
    return columns, rows


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="calib_command", required=True, metavar="TOOL")
    p = sub.add_parser(
        "chessboard", help="calibrate a camera's intrinsics from chessboard images",
        description="Calibrate one camera's intrinsics from chessboard images (OpenCV) and write the "
                    "project's rig YAML (docs/calibration.md). If --out already holds a rig, the camera "
                    "--name is replaced there, keeping its extrinsics, or appended.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images of the chessboard (same camera, same size)")
    p.add_argument("--board", type=_board, required=True, metavar="COLSxROWS",
                   help="inner corners per row x per column, e.g. 9x6")
    p.add_argument("--square", type=_positive, required=True, metavar="METRES", help="square size in metres")
    p.add_argument("--out", required=True, metavar="RIG_YAML", help="rig YAML to write or update")
    p.add_argument("--name", default="camera", help="camera name in the rig (default: camera)")
    p.add_argument("--model", default="plumb_bob", choices=("plumb_bob", "rational_polynomial"),
                   help="distortion model to fit (default: plumb_bob)")
    p.set_defaults(_calib_run=_run_chessboard)


def run(args: argparse.Namespace) -> int:
    return args._calib_run(args)


def _run_chessboard(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from calib.chessboard import calibrate_chessboard
    from calib.rig import Rig, load_rig, save_rig

    result = calibrate_chessboard(args.images, args.board, args.square, args.name, args.model)
    for path in result.skipped:
        print(f"warning: {path}: no {args.board[0]}x{args.board[1]} chessboard found, skipped", file=sys.stderr)
    camera = result.camera
    out = Path(args.out)
    if out.exists():
        rig = load_rig(out)
        if camera.name in rig:
            camera = dataclasses.replace(camera, T_vehicle_camera=rig[camera.name].T_vehicle_camera)
            action = f"replaced {camera.name!r} (extrinsics kept) in"
        else:
            action = f"added {camera.name!r} to"
        cameras = [camera if c.name == camera.name else c for c in rig.cameras]
        rig = Rig(cameras if camera.name in rig else [*cameras, camera])
    else:
        rig, action = Rig([camera]), f"wrote {camera.name!r} to"
    save_rig(rig, out)

    print(f"views: {len(result.views)} of {len(args.images)} images "
          f"(worst {max(result.per_view_rms):.3f} px: {result.views[result.per_view_rms.index(max(result.per_view_rms))]})")
    print(f"RMS reprojection error: {result.rms:.4f} px")
    print(f"size {camera.width}x{camera.height}  fx {camera.fx:.3f}  fy {camera.fy:.3f}  "
          f"cx {camera.cx:.3f}  cy {camera.cy:.3f}")
    print(f"{camera.distortion}: {' '.join(f'{c:.6g}' for c in camera.coeffs)}")
    print(f"{action} {out}")
    return 0
