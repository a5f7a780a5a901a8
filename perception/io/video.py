"""Plain video files as a drive: one file per camera, named by the file stem, calibration-less cameras.

A frame's t_ns is its presentation time in the container (OpenCV's CAP_PROP_POS_MSEC after decoding it),
so each file's clock starts at its first frame; files are assumed to start together.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import cv2

from calib.rig import Rig
from perception.errors import DriveError
from perception.frame import Frame
from perception.io.drive_common import CameraFrame, default_camera, select_cameras
from perception.io.drive_images import check_size


class VideoDrive:
    def __init__(self, paths: Sequence[str | Path]):
        self._paths = {Path(p).stem: Path(p) for p in paths}
        if len(self._paths) != len(paths) or not paths:
            raise DriveError(f"video drive needs one or more files with distinct names, got {list(map(str, paths))}")
        cameras = []
        for name, path in self._paths.items():
            capture = _open(path)
            width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            capture.release()
            check_size(str(path), width, height)
            cameras.append(default_camera(name, width, height))
        self.rig = Rig(cameras)
        self._time_range: tuple[int, int] | None = None

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.rig.names

    @property
    def start_ns(self) -> int | None:
        time_range = self._times()
        return None if time_range is None else time_range[0]

    @property
    def end_ns(self) -> int | None:
        time_range = self._times()
        return None if time_range is None else time_range[1]

    @property
    def duration_ns(self) -> int:
        time_range = self._times()
        return 0 if time_range is None else time_range[1] - time_range[0]

    def frames(self, cameras: Iterable[str] | None = None, start_ns: int | None = None,
               end_ns: int | None = None, on_bad_frame: Callable[[DriveError], None] | None = None
               ) -> Iterator[CameraFrame]:
        """Time-ordered across files (ties in rig order); frames before start_ns are skipped undecoded."""
        selected = select_cameras("video drive", self.cameras, cameras)
        yield from heapq.merge(*(self._frames(c, start_ns, end_ns, on_bad_frame) for c in selected),
                               key=lambda f: f.t_ns)

    def close(self) -> None:
        """Nothing stays open between calls."""

    def __enter__(self) -> "VideoDrive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _frames(self, camera: str, start_ns: int | None, end_ns: int | None,
                on_bad_frame: Callable[[DriveError], None] | None) -> Iterator[CameraFrame]:
        path, model = self._paths[camera], self.rig[camera]
        capture = _open(path)
        try:
            for index, t_ns in enumerate(_grab_times(capture, path)):
                if end_ns is not None and t_ns >= end_ns:
                    return
                if start_ns is not None and t_ns < start_ns:
                    continue
                image = capture.retrieve()[1]
                if image is None or image.shape != (model.height, model.width, 3):
                    error = DriveError(f"{path}: frame {index} does not decode to a {model.width}x{model.height} "
                                       "colour image")
                    if on_bad_frame is None:
                        raise error
                    on_bad_frame(error)
                    continue
                yield CameraFrame(camera, t_ns, Frame.from_bgr(image))
        finally:
            capture.release()

    def _times(self) -> tuple[int, int] | None:
        """First and last frame times over all files (grabs every frame once, without converting pixels)."""
        if self._time_range is None:
            times = []
            for path in self._paths.values():
                capture = _open(path)
                try:
                    times += list(_grab_times(capture, path))
                finally:
                    capture.release()
            self._time_range = (min(times), max(times)) if times else None
        return self._time_range


def _grab_times(capture: cv2.VideoCapture, path: Path) -> Iterator[int]:
    """Grabs frame after frame, yielding each one's time (it can then be retrieved); times must increase."""
    previous = -1
    for index in itertools.count():
        if not capture.grab():
            return
        t_ns = round(capture.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
        if t_ns <= previous:
            raise DriveError(f"{path}: frame {index} has time {t_ns} ns, not after the previous frame's "
                             f"{previous} ns")
        previous = t_ns
        yield t_ns


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise DriveError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DriveError(f"{path}: OpenCV cannot open it as a video")
    return capture
