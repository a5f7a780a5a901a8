"""Live cameras through OpenCV VideoCapture: V4L2 devices, GStreamer pipelines, RTSP URLs, video files."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import cv2

from perception.errors import ConfigError
from perception.frame import Frame
from perception.sources.slot import CapturedFrame


def has_gstreamer(build_information: str | None = None) -> bool:
    """Whether this OpenCV was built with GStreamer (the pip wheels are not; docs/cameras.md)."""
    info = cv2.getBuildInformation() if build_information is None else build_information
    return re.search(r"^\s*GStreamer:\s*YES", info, re.MULTILINE) is not None


def check_spec(camera: str, spec: str) -> None:
    """Refuses, at start, a source this OpenCV cannot open at all: a GStreamer pipeline without GStreamer."""
    if "!" in spec and not has_gstreamer():
        raise ConfigError(f"source.cameras.{camera}: {spec!r} is a GStreamer pipeline, but this OpenCV "
                          f"({cv2.__version__}) was built without GStreamer; use a V4L2 device, an RTSP URL "
                          "or a file, or install an OpenCV with GStreamer (docs/cameras.md)")


def open_capture(spec: str) -> cv2.VideoCapture:
    """`spec`: a device index ("0"), "/dev/videoN", an RTSP/HTTP URL, a file path, or a GStreamer
    pipeline (contains "!", must end in an appsink; needs an OpenCV built with GStreamer)."""
    if spec.isdigit():
        cap = cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
    elif spec.startswith("/dev/video"):
        cap = cv2.VideoCapture(spec, cv2.CAP_V4L2)
    elif "!" in spec:
        cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
    else:
        cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise ConfigError(f"camera source {spec!r}: OpenCV could not open it")
    return cap


def is_file_source(spec: str) -> bool:
    return not (spec.isdigit() or spec.startswith("/dev/video") or "!" in spec or "://" in spec)


def capture_frames(camera: str, spec: str, stop: threading.Event) -> Iterator[CapturedFrame]:
    """Frames from one VideoCapture, stamped with the source's own time.

    Capture time: the container / driver timestamp (CAP_PROP_POS_MSEC). A live source whose timestamp
    is missing or stops increasing switches, for good, to CLOCK_MONOTONIC at grab (what V4L2 drivers
    stamp). Video files are paced by their timestamps so they behave like a live camera.
    """
    cap = open_capture(spec)
    paced = is_file_source(spec)
    start_wall: float | None = None
    last_t = -1
    monotonic_clock = False
    seq = 0
    try:
        while not stop.is_set():
            ok = cap.grab()
            if not ok:
                return
            t_ns = int(round(cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6))
            if not paced and (monotonic_clock or t_ns <= last_t or (t_ns == 0 and seq > 0)):
                monotonic_clock = True
                t_ns = time.monotonic_ns()
            ok, image = cap.retrieve()
            if not ok or image is None:
                continue
            if paced:
                if start_wall is None:
                    start_wall = time.monotonic() - t_ns / 1e9
                delay = start_wall + t_ns / 1e9 - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            last_t = t_ns
            yield CapturedFrame(camera, t_ns, Frame.from_bgr(image), seq)
            seq += 1
    finally:
        cap.release()
