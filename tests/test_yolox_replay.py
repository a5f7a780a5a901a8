"""End to end: the shared YOLOX-Nano (a plug-in detector with the bundled card) replayed on real dashcam
footage through the node publishes tracked cars with stable ids and ground-plane ranges."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.io.run_file import load_run
from perception.node.config import NodeConfig
from perception.track.ranging import RangeSource
from replay.runner import replay_drive

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
YOLOX = SHARED / "models" / "yolox_nano.onnx"
VIDEO = SHARED / "dashcam" / "solidWhiteRight.mp4"
FRAMES = 40

pytestmark = pytest.mark.skipif(not (YOLOX.is_file() and VIDEO.is_file()),
                                reason="../shared/data (YOLOX-Nano, solidWhiteRight.mp4) is absent")


def first_frames(src: Path, out: Path, count: int) -> Path:
    """The first `count` frames of a video as a new file (the replay stays short)."""
    capture = cv2.VideoCapture(str(src))
    fps = capture.get(cv2.CAP_PROP_FPS)
    writer = None
    for _ in range(count):
        ok, image = capture.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, image.shape[1::-1])
        writer.write(image)
    writer.release()
    capture.release()
    return out


def test_yolox_on_real_dashcam_video_publishes_tracked_cars_with_ranges(tmp_path):
    clip = first_frames(VIDEO, tmp_path / "dashcam.mp4", FRAMES)
    config = NodeConfig()
    config = dataclasses.replace(config, model=str(YOLOX), engine=dataclasses.replace(config.engine, threads=1))
    summary = replay_drive(clip, tmp_path / "run.mcap", config)
    assert summary.frame_sets == FRAMES

    run = load_run(tmp_path / "run.mcap")
    assert len(run.detections) == FRAMES
    seen = collections.Counter()
    ranges = collections.defaultdict(list)
    for recorded in run.detections:
        message = recorded.message
        assert message.diag.model_id == "yolox-nano-coco"
        objects = message.objects
        assert (objects.box[:, 2] > objects.box[:, 0]).all() and (objects.box[:, 3] > objects.box[:, 1]).all()
        assert ((objects.score >= 0) & (objects.score <= 1)).all()
        for track, cls, rng, source, coasting in zip(objects.track_id, objects.cls, objects.range_m,
                                                     objects.range_source, objects.coasting):
            if message.classes[cls] == "car" and not coasting:
                seen[int(track)] += 1
                ranges[int(track)].append((float(rng), int(source)))
    stable = [t for t, n in seen.items() if n >= 0.75 * FRAMES]
    # the car ahead in the right lane keeps its id over (almost) the whole clip
    assert len(stable) >= 1, seen
    for t in stable:
        r = np.array([x for x, _ in ranges[t]])
        assert {s for _, s in ranges[t]} == {RangeSource.GEOMETRY}  # no range head: the ground plane
        assert np.isfinite(r).all() and (r > 5).all() and (r < 80).all()
        assert np.ptp(r) < 0.5 * np.median(r)  # smooth: the same car, not a jumble of detections
