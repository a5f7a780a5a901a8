"""Live sources: OpenCV / GStreamer cameras (one thread each) and the ZeroMQ frame bus (one thread)."""

from __future__ import annotations

from collections.abc import Mapping

from calib.rig import Rig
from perception.errors import ConfigError
from perception.messaging.curve import CurveClientKeys
from perception.sources.base import BadFrame, Producer, PushSource
from perception.sources.capture import capture_frames, check_spec
from perception.sources.framebus import FrameBusReceiver


class CameraSource(PushSource):
    """`specs`: camera name -> OpenCV source spec (device index, file, URL or GStreamer pipeline)."""

    def __init__(self, rig: Rig, specs: Mapping[str, str]) -> None:
        unknown = [name for name in specs if name not in rig.names]
        if unknown:
            raise ConfigError(f"source.cameras: {unknown} are not cameras of the rig {list(rig.names)}")
        for name, spec in specs.items():
            check_spec(name, spec)
        super().__init__(rig)
        self.specs = dict(specs)

    def producers(self, cameras: tuple[str, ...], on_bad_frame: BadFrame) -> list[tuple[str, Producer, tuple[str, ...]]]:
        def produce(name: str, spec: str) -> Producer:
            return lambda stop: capture_frames(name, spec, stop)

        return [(name, produce(name, spec), (name,)) for name, spec in self.specs.items() if name in cameras]


class FrameBusSource(PushSource):
    """Frames published by another process on the frame bus (perception/sources/framebus.py)."""

    def __init__(self, rig: Rig, endpoint: str, curve: CurveClientKeys | None = None) -> None:
        super().__init__(rig)
        self.endpoint = endpoint
        self.curve = curve

    def producers(self, cameras: tuple[str, ...], on_bad_frame: BadFrame) -> list[tuple[str, Producer, tuple[str, ...]]]:
        return [("framebus", FrameBusReceiver(self.endpoint, list(cameras), curve=self.curve).frames, cameras)]
