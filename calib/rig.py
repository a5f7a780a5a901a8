"""A rig: the vehicle's cameras, in a fixed order, by name; loading and saving rig files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from calib.camera import CameraModel
from calib.formats import cameras_to_yaml, read_cameras, read_cameras_text
from perception.errors import CalibrationError


class Rig(Mapping[str, CameraModel]):
    """Ordered mapping camera name -> CameraModel. The order is the batch order of the network input."""

    def __init__(self, cameras: Iterable[CameraModel]):
        cameras = tuple(cameras)
        if not cameras:
            raise CalibrationError("rig: has no cameras")
        by_name: dict[str, CameraModel] = {}
        for camera in cameras:
            if not isinstance(camera, CameraModel):
                raise CalibrationError(f"rig: expected CameraModel, got {type(camera).__name__}")
            if camera.name in by_name:
                raise CalibrationError(f"rig: camera {camera.name!r} appears twice")
            by_name[camera.name] = camera
        self._cameras = by_name

    @property
    def cameras(self) -> tuple[CameraModel, ...]:
        return tuple(self._cameras.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def __getitem__(self, name: str) -> CameraModel:
        try:
            return self._cameras[name]
        except KeyError:
            raise KeyError(f"no camera {name!r} in the rig (cameras: {', '.join(self._cameras)})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras)

    def __len__(self) -> int:
        return len(self._cameras)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rig):
            return NotImplemented
        return self.names == other.names and all(a == b for a, b in zip(self.cameras, other.cameras))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Rig({', '.join(f'{c.name} {c.width}x{c.height} {c.distortion}' for c in self.cameras)})"


def rig_from_yaml_str(text: str, where: str) -> Rig:
    """A rig from calibration text in any supported format; `where` names the source in errors."""
    return _rig(read_cameras_text(text, where), where)


def load_rig(path: str | Path) -> Rig:
    """A rig from a file: the project's rig YAML, ROS camera_info, OpenCV FileStorage or Kalibr camchain
    (auto-detected; docs/calibration.md)."""
    return _rig(read_cameras(path), str(path))


def rig_to_yaml_str(rig: Rig) -> str:
    """The project's rig YAML; `rig_from_yaml_str` gives back an equal rig."""
    return cameras_to_yaml(rig.cameras)


def save_rig(rig: Rig, path: str | Path) -> None:
    """Write the project's rig YAML (atomically: a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(rig_to_yaml_str(rig), encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise CalibrationError(f"{path}: cannot write: {e.strerror or e}") from None


def _rig(cameras: list[CameraModel], where: str) -> Rig:
    try:
        return Rig(cameras)
    except CalibrationError as e:
        raise CalibrationError(f"{where}: {e}") from None
