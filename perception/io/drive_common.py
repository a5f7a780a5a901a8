"""What every drive reader (MCAP drive, ROS 2 bag, video files) gives: a rig and time-ordered frames."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from calib.camera import CameraModel, mount_transform
from calib.rig import Rig
from perception.errors import DriveError
from perception.frame import Frame

# Mounting of a camera whose recording has no extrinsics: looking straight ahead, 1.5 m above the origin.
DEFAULT_T_VEHICLE_CAMERA = mount_transform(0.0, 0.0, 1.5)
DEFAULT_T_VEHICLE_CAMERA.setflags(write=False)


@dataclass(frozen=True)
class CameraFrame:
    camera: str
    t_ns: int  # capture time
    frame: Frame


class Drive(Protocol):
    @property
    def rig(self) -> Rig: ...

    @property
    def cameras(self) -> tuple[str, ...]: ...

    @property
    def start_ns(self) -> int | None: ...

    @property
    def end_ns(self) -> int | None: ...

    @property
    def duration_ns(self) -> int: ...

    def frames(self, cameras: Iterable[str] | None = None, start_ns: int | None = None,
               end_ns: int | None = None, on_bad_frame: Callable[[DriveError], None] | None = None
               ) -> Iterator[CameraFrame]:
        """Frames of `cameras` (default all) with start_ns <= t_ns < end_ns, in t_ns order. A malformed
        frame raises DriveError, or is passed to `on_bad_frame` and skipped."""
        ...

    def close(self) -> None: ...


def default_camera(name: str, width: int, height: int) -> CameraModel:
    """A camera with no calibration: distortion-free pinhole, fx = fy = width (~53 deg horizontal field of
    view), principal point at the image centre, mounted as `DEFAULT_T_VEHICLE_CAMERA`."""
    return CameraModel(name, width, height, float(width), float(width), (width - 1) / 2, (height - 1) / 2,
                       "none", (), DEFAULT_T_VEHICLE_CAMERA)


def select_cameras(where: str, available: tuple[str, ...], wanted: Iterable[str] | None) -> tuple[str, ...]:
    if wanted is None:
        return available
    wanted = tuple(wanted)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise DriveError(f"{where}: no camera {unknown[0]!r} (cameras: {', '.join(available)})")
    return tuple(c for c in available if c in wanted)


def check_frame_size(where: str, frame: Frame, camera: CameraModel) -> None:
    if (frame.width, frame.height) != (camera.width, camera.height):
        raise DriveError(f"{where}: image is {frame.width}x{frame.height}, the calibration of camera "
                         f"{camera.name!r} is {camera.width}x{camera.height}")
