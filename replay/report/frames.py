"""Camera frames with the run's boxes drawn: the report's contact sheet and the overlay video."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from perception.errors import DriveError
from perception.labels import CLASSES
from perception.messaging.schemas import DetectionsMessage, HintsMessage
from perception.io.drive_common import Drive
from perception.io.drive_images import frame_to_bgr
from replay.metrics import RunMetrics
from replay.metrics.align import EvalImage, detections_of
from replay.metrics.matching import box_iou, match_boxes
from perception.io.overlay import FALSE_COLOR, GT_COLOR, MISSED_COLOR, class_color, draw_box, object_label
from perception.io.run_file import Run

TILE_WIDTH = 480
VIDEO_HEIGHT = 360
MIN_LABELLED_HEIGHT = 18  # px as drawn


@dataclass(frozen=True)
class Tile:
    camera: str
    t_ns: int
    caption: str
    jpeg: bytes


@dataclass(frozen=True)
class _Pick:
    camera: str
    t_ns: int
    message: DetectionsMessage
    labelled: EvalImage | None
    missed: int
    false: int


def frame_errors(im: EvalImage, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(detection matched [N], ground-truth box matched [G]): one to one, same class, IoU >= min_iou. Another
    camera's view of a fused object (replay/metrics/align.py) is no miss, and a detection on it is not false."""
    scored = im.scored_view
    det_ok = im.on_other_view(min_iou)
    gt_ok = ~scored
    allowed = (im.det.cls[:, None] == im.gt_cls[None, :]) & ~det_ok[:, None] & scored[None, :]
    rows, cols = match_boxes(box_iou(im.det.box, im.gt_boxes), min_iou, allowed)
    det_ok[rows] = gt_ok[cols] = True
    return det_ok, gt_ok


def contact_sheet(run: Run, metrics: RunMetrics, drive: Drive, min_iou: float, count: int = 12) -> list[Tile]:
    """With ground truth: the camera frames with the most missed + false detections, worst first. Without:
    frame sets spread evenly over the run (every camera of each)."""
    by_frame = {m.t_ns: m.message for m in run.detections}
    picks: list[_Pick] = []
    if metrics.images:
        scored = []
        for im in metrics.images:
            if im.frame_ns is None:
                continue
            det_ok, gt_ok = frame_errors(im, min_iou)
            scored.append((-(int((~det_ok).sum()) + int((~gt_ok).sum())), im.t_ns, im, int((~gt_ok).sum()),
                           int((~det_ok).sum())))
        scored.sort(key=lambda s: (s[0], s[1]))
        picks = [_Pick(im.camera, im.t_ns, by_frame[im.frame_ns], im, missed, false)
                 for _, _, im, missed, false in scored[:count]]
    elif run.detections:
        cameras = run.rig.names
        sets = max(1, count // len(cameras))
        chosen = np.unique(np.linspace(0, len(run.detections) - 1, sets).round().astype(int))
        for index in chosen:
            m = run.detections[index].message
            picks += [_Pick(c, int(m.diag.capture_ns[i]), m, None, 0, 0) for i, c in enumerate(m.diag.cameras)
                      if m.diag.capture_ns[i] >= 0]
    start = run.detections[0].t_ns if run.detections else 0
    tiles = []
    for pick in picks:
        image = _image_at(drive, pick.camera, pick.t_ns)
        if image is None:
            continue
        scale = TILE_WIDTH / image.shape[1]
        image = _resize(image, TILE_WIDTH, round(image.shape[0] * scale))
        _draw(image, scale, pick.message, pick.camera, pick.labelled, min_iou)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        caption = f"{pick.camera} +{(pick.t_ns - start) / 1e9:.2f} s"
        if pick.labelled is not None:
            caption += f": {pick.missed} missed, {pick.false} false"
        tiles.append(Tile(pick.camera, pick.t_ns, caption, jpeg.tobytes()))
    return tiles


def write_video(run: Run, drive: Drive, out: Path, labels: dict[tuple[str, int], EvalImage] | None = None,
                min_iou: float = 0.5) -> int:
    """The overlay video: per frame set every camera side by side (VIDEO_HEIGHT px high) with its boxes and a
    status line (`labels`: the metrics' labelled images by (camera, capture time)); H.264 (yuv420p, MP4 with
    faststart, which browsers play) at the frame-set rate, written with PyAV. Returns the number of video
    frames written."""
    if not run.detections:
        raise DriveError(f"{run.path}: no detections to draw")
    times = np.array([m.t_ns for m in run.detections], np.int64)
    fps = 1e9 / float(np.median(np.diff(times))) if len(times) > 1 else 10.0
    hints = {m.t_ns: m.message for m in run.hints}
    cameras = run.rig.names
    widths = [round(run.rig[c].width * VIDEO_HEIGHT / run.rig[c].height) // 2 * 2 for c in cameras]
    size = (sum(widths), VIDEO_HEIGHT + 28)
    try:
        container = av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"})
    except (av.FFmpegError, OSError) as e:
        raise DriveError(f"{out}: cannot write a video here: {e}") from None
    stream = container.add_stream("h264", rate=Fraction(round(fps * 1000), 1000))
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.options = {"crf": "26", "preset": "veryfast"}
    written = 0
    start = int(times[0])
    latest: dict[str, tuple[int, np.ndarray]] = {}
    frames = _frames(drive, cameras)
    pending = next(frames, None)
    try:
        for recorded in tqdm(run.detections, desc="overlay video", unit="frame", disable=not sys.stderr.isatty()):
            m = recorded.message
            wanted = {c: int(t) for c, t in zip(m.diag.cameras, m.diag.capture_ns) if t >= 0}
            horizon = max(wanted.values(), default=recorded.t_ns)
            while pending is not None and pending[1] <= horizon:
                latest[pending[0]] = (pending[1], pending[2])
                pending = next(frames, None)
            canvas = np.zeros((size[1], size[0], 3), np.uint8)
            x = 0
            for camera, width in zip(cameras, widths):
                held = latest.get(camera)
                if held is not None and held[0] == wanted.get(camera):
                    image = _resize(held[1], width, VIDEO_HEIGHT)
                    labelled = labels.get((camera, held[0])) if labels else None
                    _draw(image, VIDEO_HEIGHT / held[1].shape[0], m, camera, labelled, min_iou)
                    canvas[28:, x:x + width] = image
                cv2.rectangle(canvas, (x, 28), (x + 8 + 11 * len(camera), 50), (0, 0, 0), -1)
                cv2.putText(canvas, camera, (x + 4, 45), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (230, 230, 230), 1,
                            cv2.LINE_AA)
                x += width
            _status(canvas, recorded.t_ns - start, hints.get(recorded.t_ns))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(canvas, format="bgr24")))
            written += 1
        container.mux(stream.encode(None))
    finally:
        container.close()
    return written


def _frames(drive: Drive, cameras: tuple[str, ...]) -> Iterator[tuple[str, int, np.ndarray]]:
    for cf in drive.frames(cameras):
        yield cf.camera, cf.t_ns, frame_to_bgr(cf.frame)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _image_at(drive: Drive, camera: str, t_ns: int) -> np.ndarray | None:
    for cf in drive.frames([camera], start_ns=t_ns, end_ns=t_ns + 1):
        return frame_to_bgr(cf.frame).copy()
    return None


def _status(canvas: np.ndarray, since_start_ns: int, hints: HintsMessage | None) -> None:
    text = f"+{since_start_ns / 1e9:7.2f} s"
    color = (220, 220, 220)
    if hints is not None:
        lead = "none" if hints.lead is None else (f"#{hints.lead.track_id} {hints.lead.gap_m:.1f} m "
                                                  f"ttc {hints.lead.ttc_s:.1f} s")
        text += f"   brake {hints.brake.upper():<7}   lead {lead}   confidence {hints.confidence:.2f}"
        color = {"none": (220, 220, 220), "prepare": (0, 200, 255), "brake": (60, 60, 255)}[hints.brake]
    cv2.putText(canvas, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, color, 1, cv2.LINE_AA)


def _draw(image: np.ndarray, scale: float, m: DetectionsMessage, camera: str, labelled: EvalImage | None,
          min_iou: float) -> None:
    """The frame set's objects of `camera` on its image resized by `scale`; with ground truth also its boxes:
    matched (or another camera's view of the object) thin white, missed red (dashed), and detections that
    match nothing in magenta."""
    det = detections_of(m, m.diag.cameras.index(camera))
    false = np.zeros(len(det), bool)
    if labelled is not None:
        gt = labelled.gt
        det_ok, gt_ok = frame_errors(replace(labelled, det=det, frame_ns=m.frame_ns), min_iou)
        false = ~det_ok
        for b, ok in zip(gt.boxes, gt_ok):
            box = np.array(b.box) * scale
            label = "" if ok or not _labelled(box) else f"MISSED {b.cls} #{b.id}"
            draw_box(image, box, GT_COLOR if ok else MISSED_COLOR, label, thickness=1 if ok else 2, dashed=not ok)
    for k in range(len(det)):
        name, box = CLASSES[det.cls[k]], det.box[k] * scale
        label = object_label(name, int(det.track_id[k]), det.score[k], det.range_m[k], bool(det.coasting[k]))
        draw_box(image, box, FALSE_COLOR if false[k] else class_color(name),
                 (("FALSE " if false[k] else "") + label) if _labelled(box) else "")


def _labelled(box: np.ndarray) -> bool:
    """Far-away boxes get no label: at the horizon the labels would hide each other and the image."""
    return float(box[3] - box[1]) >= MIN_LABELLED_HEIGHT
