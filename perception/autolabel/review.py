"""Review of a labelled drive: one self-contained HTML contact sheet, least-confident frames first.

A frame's confidence is the lowest teacher score among its automatic labels (interpolated boxes carry
the score interpolated between their neighbours); frames without labels come last. Each tile shows the
frame with its labels drawn in the class colours (perception/io/overlay.py): `cls #track score`, dashed
for interpolated boxes, thin for corrected ones, and the frame's camera and capture time (ns, the unit of
the corrections file). A table lists every track (camera, id, class, frames, first / last time, track
score), and `template` writes a corrections file naming every track, commented out, to edit.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from perception.errors import DriveError
from perception.io.drive import DriveReader
from perception.io.drive_images import frame_to_bgr
from perception.io.overlay import class_color, draw_box
from perception.labels import GroundTruth

THUMB_WIDTH = 480


@dataclass(frozen=True)
class TrackRow:
    camera: str
    id: int
    cls: str
    frames: int
    first_ns: int
    last_ns: int
    track_score: float
    teacher: str


def frame_confidence(gt: GroundTruth) -> float:
    scores = [b.auto.score for b in gt.boxes if b.auto is not None]
    return min(scores) if scores else float("inf")


def track_rows(labels: Sequence[GroundTruth]) -> list[TrackRow]:
    seen: dict[tuple[str, int], list] = {}
    for gt in labels:
        for b in gt.boxes:
            if b.auto is None:
                continue
            row = seen.setdefault((gt.camera, b.id), [b.cls, 0, gt.t_ns, gt.t_ns, b.auto.track_score, b.auto.teacher])
            row[0] = b.cls
            row[1] += 1
            row[2], row[3] = min(row[2], gt.t_ns), max(row[3], gt.t_ns)
    return [TrackRow(camera, track, *values) for (camera, track), values in sorted(seen.items())]


def write_review(labelled: str | Path, out: str | Path, max_frames: int = 60, template: str | Path | None = None) -> str:
    """Writes the contact sheet (and the corrections template); returns a one-line summary."""
    if max_frames < 1:
        raise DriveError(f"review: --frames must be >= 1, got {max_frames}")
    with DriveReader(labelled) as reader:
        labels = list(reader.ground_truth())
        if not any(b.auto is not None for gt in labels for b in gt.boxes):
            raise DriveError(f"{labelled}: has no automatic labels (made by perception autolabel) to review")
        ranked = sorted(labels, key=lambda g: (frame_confidence(g), g.t_ns, g.camera))[:max_frames]
        wanted = {(g.camera, g.t_ns): g for g in ranked}
        tiles: dict[tuple[str, int], bytes] = {}
        for cf in reader.frames():
            gt = wanted.get((cf.camera, cf.t_ns))
            if gt is not None:
                tiles[(cf.camera, cf.t_ns)] = _tile(frame_to_bgr(cf.frame), gt)
    rows = track_rows(labels)
    Path(out).write_text(_page(Path(labelled).name, ranked, tiles, rows), encoding="utf-8")
    if template is not None:
        Path(template).write_text(corrections_template(rows), encoding="utf-8")
    return f"{len(tiles)} frames of {len(labels)}, {len(rows)} tracks"


def _tile(image: np.ndarray, gt: GroundTruth) -> bytes:
    image = image.copy()
    for b in gt.boxes:
        origin = b.auto.origin if b.auto is not None else "exact"
        score = b.auto.score if b.auto is not None else 1.0
        draw_box(image, b.box, class_color(b.cls), f"{b.cls} #{b.id} {score:.2f}",
                 thickness=1 if origin == "corrected" else 2, dashed=origin == "interpolated")
    scale = THUMB_WIDTH / image.shape[1]
    thumb = cv2.resize(image, (THUMB_WIDTH, max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise DriveError(f"review: cannot encode the tile of {gt.camera} at {gt.t_ns} ns")
    return data.tobytes()


def _page(name: str, ranked: Sequence[GroundTruth], tiles: dict[tuple[str, int], bytes],
          rows: Sequence[TrackRow]) -> str:
    e = html.escape
    figures = []
    for gt in ranked:
        data = tiles.get((gt.camera, gt.t_ns))
        if data is None:
            continue
        confidence = frame_confidence(gt)
        shown = f"{confidence:.2f}" if np.isfinite(confidence) else "no labels"
        tracks = ", ".join(f"#{b.id} {b.cls}" for b in gt.boxes)
        figures.append(
            f'<figure><img alt="{e(gt.camera)} {gt.t_ns}" src="data:image/jpeg;base64,'
            f'{base64.b64encode(data).decode("ascii")}"><figcaption>{e(gt.camera)} t_ns={gt.t_ns} '
            f'({gt.t_ns / 1e9:.3f} s) &middot; lowest score {shown}<br>{e(tracks)}</figcaption></figure>')
    table = "".join(
        f"<tr><td>{e(r.camera)}</td><td>{r.id}</td><td>{e(r.cls)}</td><td>{r.frames}</td><td>{r.first_ns}</td>"
        f"<td>{r.last_ns}</td><td>{r.track_score:.2f}</td></tr>" for r in rows)
    teachers = ", ".join(sorted({r.teacher for r in rows}))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>autolabel review: {e(name)}</title>
<style>body{{font-family:sans-serif;margin:1em}}figure{{display:inline-block;margin:4px;width:{THUMB_WIDTH}px}}
figcaption{{font-size:12px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px}}</style>
</head><body>
<h1>autolabel review: {e(name)}</h1>
<p>Teacher: {e(teachers)}. {len(figures)} frames, least confident first (lowest teacher score of a label).
Dashed: interpolated; thin: corrected. Fix labels with a corrections file (docs/autolabel.md) and run
<code>perception autolabel ... --corrections corr.yaml</code> again.</p>
{''.join(figures)}
<h2>Tracks</h2>
<table><tr><th>camera</th><th>track</th><th>class</th><th>frames</th><th>first t_ns</th><th>last t_ns</th>
<th>track score</th></tr>{table}</table>
</body></html>
"""


def corrections_template(rows: Sequence[TrackRow]) -> str:
    """A corrections file with one commented-out entry per track (uncomment and edit)."""
    teachers = sorted({r.teacher for r in rows})
    lines = ["# Corrections of automatic labels (docs/autolabel.md): uncomment and edit entries, then run",
             "# perception autolabel <same input> --teacher <same model> --out ... --corrections <this file>",
             "# actions: delete (optional start_ns / end_ns), relabel (cls), rebox (box [x0, y0, x1, y1],",
             "# optional box_end, start_ns, end_ns)."]
    if len(teachers) == 1:
        lines.append(f"teacher: {teachers[0]}")
    lines.append("corrections:")
    for r in rows:
        lines.append(f"  # - {{camera: {r.camera}, track: {r.id}, action: delete}}   # {r.cls}, {r.frames} frames, "
                     f"{r.first_ns}..{r.last_ns} ns, track score {r.track_score:.2f}")
    if not rows:
        lines[-1] = "corrections: []"
    return "\n".join(lines) + "\n"
