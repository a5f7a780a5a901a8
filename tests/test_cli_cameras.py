"""Camera specs the installed OpenCV cannot open are refused at start with a clear error."""

from __future__ import annotations

import cv2
import pytest

from calib.defaults import default_rig
from perception.errors import ConfigError
from perception.sources.capture import has_gstreamer
from perception.sources.live import CameraSource

PIPELINE = "v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true"


def test_build_information_is_parsed():
    assert has_gstreamer("Video I/O:\n    GStreamer:                   YES (1.22.0)\n")
    assert not has_gstreamer("Video I/O:\n    GStreamer:                   NO\n")
    assert has_gstreamer() == ("GStreamer:                   YES" in cv2.getBuildInformation())


@pytest.mark.skipif(has_gstreamer(), reason="this OpenCV has GStreamer: pipelines are accepted")
def test_a_pipeline_without_gstreamer_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"source.cameras.front: .* is a GStreamer pipeline, but this OpenCV "
                                          r".* was built without GStreamer.*docs/cameras.md"):
        CameraSource(default_rig(1), {"front": PIPELINE})
