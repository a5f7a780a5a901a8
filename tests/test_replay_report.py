"""The replay report: one self-contained HTML file with the metrics, plots and worst frames; the overlay
video."""

from __future__ import annotations

import base64
import re

import av

import cv2
import numpy as np
import pytest

from perception.errors import DriveError
from perception.messaging.schemas import DetectionsMessage, Diagnostics, HintsMessage
from perception.io.drive import open_drive
from replay.report import build_report
from replay.report.frames import frame_errors
from tests.test_replay_support import objects_of, record, simulated_outputs, small_rig, write_drive


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap", frames=20)


def _images(html: str) -> list[tuple[str, str, np.ndarray]]:
    found = re.findall(r'<img class="(\w+)" alt="([^"]*)" src="data:image/(?:png|jpeg);base64,([^"]+)">', html)
    return [(cls, alt, cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR))
            for cls, alt, data in found]


def test_report_with_ground_truth(drive, tmp_path):
    run = record(tmp_path / "run.mcap", small_rig(), simulated_outputs(drive, drop_ids=(4,)), drive)
    summary = build_report(run, tmp_path / "report.html", video=tmp_path / "overlay.mp4")
    html = (tmp_path / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', html)   # nothing outside the file
    images = _images(html)
    assert all(image is not None and image.size for _, _, image in images)
    plots = [alt for cls, alt, _ in images if cls == "plot"]
    assert plots == ["Precision-recall", "Errors against distance", "Detections over time", "Bird-eye view",
                     "Hints over time", "Latency histogram", "Latency timeline"]
    metrics = summary.metrics
    assert f"<b>{metrics.detection.map50:.3f}</b><span>mAP@0.5" in html
    assert f"<b>{metrics.tracking.total.mota:.3f}</b><span>MOTA" in html
    # never detected: AP 0; seen by both cameras in each of the 20 frame sets, it is scored once in each
    assert "<td>cyclist</td><td>20</td><td>0</td><td>0.000</td>" in html
    other_views = sum(int((~im.scored_view).sum()) for im in metrics.images)
    assert other_views > 0 and f"scored once ({other_views} other views ignored" in html
    # worst frames first: the contact sheet's captions count misses + false detections, in decreasing order
    captions = [alt for cls, alt, _ in images if cls == "frame"]
    assert summary.tiles == len(captions) == 12
    errors = [int(m) + int(f) for m, f in (re.search(r"(\d+) missed, (\d+) false", c).groups() for c in captions)]
    assert errors == sorted(errors, reverse=True) and errors[0] >= 2
    worst = max((sum(map(lambda a: int((~a).sum()), frame_errors(im, 0.5))), -im.t_ns) for im in metrics.images
                if im.frame_ns is not None)
    assert errors[0] == worst[0]
    # the video: one frame per frame set, both cameras side by side
    video = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == summary.video_frames == 20
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    ok, frame = video.read()
    assert ok and frame.shape == (360 + 28, 2 * 480, 3)
    with av.open(str(tmp_path / "overlay.mp4")) as container:   # H.264 in yuv420p: what browsers play
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    embedded, = re.findall(r"<video class='overlay' controls[^>]* src='data:video/mp4;base64,([^']+)'>", html)
    assert base64.b64decode(embedded) == (tmp_path / "overlay.mp4").read_bytes()


def test_drawn_boxes_mark_missed_and_false_objects(drive, tmp_path):
    """A frame set with one object moved away from its ground truth: the tile shows a magenta (false) and a
    red (missed) box where they are."""
    outputs = simulated_outputs(drive)
    first = next(m for m in outputs if isinstance(m, DetectionsMessage))
    o = first.objects
    o.box[:] = (10, 10, 40, 30)  # every object of the frame set in one wrong place
    run = record(tmp_path / "run.mcap", small_rig(), outputs, drive)
    summary = build_report(run, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    name, tile = next((alt, image) for cls, alt, image in _images(html) if cls == "frame")
    assert name.startswith("front +0.00 s:")
    magenta = (tile[:, :, 0] > 200) & (tile[:, :, 1] < 60) & (tile[:, :, 2] > 200)
    red = (tile[:, :, 2] > 180) & (tile[:, :, 1] < 80) & (tile[:, :, 0] < 80)
    ys, xs = np.nonzero(magenta)
    scale = 480 / 320
    assert magenta.sum() > 50 and xs.min() <= 12 * scale and ys.max() <= 40 * scale
    assert red.sum() > 50 and np.nonzero(red)[1].max() > 60 * scale   # missed boxes elsewhere
    assert summary.metrics.images[0].frame_ns == first.frame_ns


def test_report_without_ground_truth(tmp_path):
    drive = write_drive(tmp_path / "unlabelled.mcap", frames=10, labels=False)
    run = record(tmp_path / "run.mcap", small_rig(), [m for m in simulated_outputs(write_drive(
        tmp_path / "labelled.mcap", frames=10))], drive)
    summary = build_report(run, tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert summary.metrics.detection is None and "No ground truth in the drive" in html
    plots = [alt for cls, alt, _ in _images(html) if cls == "plot"]
    assert "Precision-recall" not in plots and "Latency histogram" in plots
    assert summary.tiles == 12 and "spread over the run" in html
    (tmp_path / "unlabelled.mcap").unlink()
    with pytest.raises(DriveError, match="its drive .*unlabelled.mcap does not exist"):
        build_report(run, tmp_path / "again.html")


def test_report_on_real_footage(shared_data, tmp_path):
    """A video drive (one camera, OpenCV's vtest.avi with its calibration-less default): frames come from the
    video file for the contact sheet and the overlay video."""
    path = shared_data / "opencv-samples" / "vtest.avi"
    drive = open_drive(path)
    rig = drive.rig
    times = [cf.t_ns for _, cf in zip(range(15), drive.frames())]
    drive.close()
    messages = []
    for k, t in enumerate(times):
        diag = Diagnostics("hand", rig.names, [t], [0], {"engine": 5_000_000 + 1000 * k})
        boxes = objects_of([{"track_id": 1, "camera": 0, "cls": 2, "score": 0.8, "box": (300 + 2 * k, 200, 340 + 2 * k, 300),
                             "range_m": float("nan"), "range_source": 0, "position": (np.nan,) * 3,
                             "velocity": (np.nan,) * 3, "ttc_s": np.nan, "age_s": k * 0.1, "coasting": False}])
        messages.append(DetectionsMessage(diag, t, [False], ("car", "truck", "pedestrian", "cyclist"), boxes))
        messages.append(HintsMessage(diag, t, None, "none", float("inf"), 150.0, [], 1.0))
    run = record(tmp_path / "run.mcap", rig, messages, path)
    summary = build_report(run, tmp_path / "report.html", video=tmp_path / "overlay.mp4")
    assert summary.video_frames == 15 and summary.tiles == 12
    html = (tmp_path / "report.html").read_text()
    tile = next(image for cls, _, image in _images(html) if cls == "frame")
    assert tile.shape[1] == 480 and tile.std() > 20   # real pixels, not a blank canvas
    assert "vtest.avi" in html
