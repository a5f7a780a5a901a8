"""An HTML contact sheet of search hits: one tile per window (every camera at the window's start, the
node's boxes drawn), images inlined as JPEG, one self-contained file."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from perception.errors import DriveError
from perception.io.overlay import class_color, draw_box, object_label
from replay.index.search import Hit
from replay.index.store import connect

THUMB_WIDTH = 320
FRAME_WINDOW_NS = 60_000_000   # a camera's frame within 60 ms of the window start stands for it


def _tile(drive_path: str, cameras: list[str], t_ns: int, objects: list[tuple]) -> np.ndarray | None:
    from perception.io.drive import open_drive
    from perception.io.drive_images import frame_to_bgr

    try:
        drive = open_drive(drive_path)
    except (DriveError, OSError):
        return None
    images = []
    try:
        for camera in cameras:
            frame = next(iter(drive.frames([camera], start_ns=t_ns - FRAME_WINDOW_NS, end_ns=t_ns + FRAME_WINDOW_NS)),
                         None)
            if frame is None:
                continue
            image = np.ascontiguousarray(frame_to_bgr(frame.frame))
            for cam, track, cls, score, x0, y0, x1, y1, range_m, coasting in objects:
                if cam == camera:
                    draw_box(image, (x0, y0, x1, y1), class_color(cls),
                             object_label(cls, track, score, float("nan") if range_m is None else range_m, coasting))
            scale = THUMB_WIDTH / image.shape[1]
            images.append(cv2.resize(image, (THUMB_WIDTH, max(1, round(image.shape[0] * scale))),
                                     interpolation=cv2.INTER_AREA))
    finally:
        drive.close()
    if not images:
        return None
    height = max(i.shape[0] for i in images)
    return np.hstack([np.pad(i, ((0, height - i.shape[0]), (0, 0), (0, 0))) for i in images])


def write_contact_sheet(db: str | Path, hits: Sequence[Hit], out: str | Path, title: str = "") -> Path:
    con = connect(db, read_only=True)
    try:
        drives = {d: (p, c.split(",")) for d, p, c in con.execute("SELECT drive, drive_path, cameras FROM drives").fetchall()}
        cells = []
        for hit in hits:
            objects = con.execute("SELECT camera, track_id, cls, score, x0, y0, x1, y1, range_m, coasting FROM objects "
                                  "WHERE drive = ? AND t_ns = ?", [hit.drive, hit.start_ns]).fetchall()
            path, cameras = drives.get(hit.drive, ("", []))
            image = _tile(path, cameras, hit.start_ns, objects) if path else None
            if image is not None:
                ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
                img = f'<img src="data:image/jpeg;base64,{base64.b64encode(jpeg.tobytes()).decode()}">'
            else:
                img = "<div class=none>drive not available</div>"
            cells.append(f"<figure>{img}<figcaption><b>{html.escape(hit.drive)}</b> {hit.start_s:.2f}-{hit.end_s:.2f} s"
                         f"<br>{html.escape(hit.why)}</figcaption></figure>")
    finally:
        con.close()
    out = Path(out)
    out.write_text("<!doctype html><meta charset=utf-8><title>search: " + html.escape(title) + "</title><style>"
                   "body{font:13px sans-serif}figure{display:inline-block;margin:6px;vertical-align:top}"
                   ".none{width:320px;height:60px;background:#ddd}</style>"
                   f"<h1>{html.escape(title)}</h1><p>{len(hits)} windows</p>" + "".join(cells) + "\n")
    return out
