"""Intrinsic calibration from chessboard images (OpenCV's findChessboardCorners + cornerSubPix +
calibrateCamera)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from calib.camera import CameraModel
from calib.formats import UNKNOWN_MOUNT
from perception.errors import CalibrationError

MIN_VIEWS = 3
_SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
_MODEL_FLAGS = {"plumb_bob": 0, "rational_polynomial": cv2.CALIB_RATIONAL_MODEL}


@dataclass(frozen=True)
class ChessboardCalibration:
    camera: CameraModel  # extrinsics: UNKNOWN_MOUNT (the camera at the vehicle origin looking forward)
    rms: float  # pixels, over all corners
    views: tuple[str, ...]  # images the board was found in
    per_view_rms: tuple[float, ...]
    skipped: tuple[str, ...]  # images without a detectable board


def find_corners(gray: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners [N,1,2] float32 of a `board` = (columns, rows) chessboard, or None."""
    found, corners = cv2.findChessboardCorners(
        gray, board, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:
        return None
    return cv2.cornerSubPix(gray, corners, (11, 11), (-1, -1), _SUBPIX_CRITERIA)


def calibrate_chessboard(images: Sequence[str | Path], board: tuple[int, int], square: float,
                         name: str = "camera", model: str = "plumb_bob") -> ChessboardCalibration:
    """Calibrate one camera from images of a chessboard with `board` inner corners and `square` metres
    per square. Images without a detectable board are skipped; all others must share one size."""
    if model not in _MODEL_FLAGS:
        raise CalibrationError(f"distortion model {model!r} cannot be calibrated here; use one of "
                               f"{sorted(_MODEL_FLAGS)}")
    if min(board) < 2 or square <= 0:
        raise CalibrationError(f"board must have at least 2x2 inner corners and square > 0, "
                               f"got {board[0]}x{board[1]}, square {square}")
    grid = np.zeros((board[0] * board[1], 3), np.float32)
    grid[:, :2] = np.mgrid[0:board[0], 0:board[1]].T.reshape(-1, 2) * square

    views, skipped, image_points, size = [], [], [], None
    for path in map(str, images):
        if not Path(path).is_file():
            raise CalibrationError(f"{path}: no such file")
        gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise CalibrationError(f"{path}: cannot read as an image")
        corners = find_corners(gray, board)
        if corners is None:
            skipped.append(path)
            continue
        this_size = (gray.shape[1], gray.shape[0])
        if size is not None and this_size != size:
            raise CalibrationError(f"{path}: image is {this_size[0]}x{this_size[1]} but {views[0]} is "
                                   f"{size[0]}x{size[1]}; calibrate one camera mode at a time")
        size = this_size
        views.append(path)
        image_points.append(corners)
    if len(views) < MIN_VIEWS:
        raise CalibrationError(f"found a {board[0]}x{board[1]} chessboard in {len(views)} of {len(images)} "
                               f"images; calibration needs at least {MIN_VIEWS}")

    rms, K, dist, _, _, _, _, per_view = cv2.calibrateCameraExtended(
        [grid] * len(views), image_points, size, None, None, flags=_MODEL_FLAGS[model])
    coeffs = dist.ravel()[:8 if model == "rational_polynomial" else 5]
    camera = CameraModel(name, size[0], size[1], K[0, 0], K[1, 1], K[0, 2], K[1, 2], model, tuple(coeffs),
                         UNKNOWN_MOUNT)
    return ChessboardCalibration(camera, float(rms), tuple(views), tuple(per_view.ravel().tolist()),
                                 tuple(skipped))
