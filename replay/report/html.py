"""One self-contained HTML page: metric tables, plots and frames embedded as base64 data URIs."""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from perception.labels import CLASSES
from replay.metrics import RunMetrics
from replay.metrics.config import MetricsConfig
from replay.metrics.hints import STAGES
from replay.report.frames import Tile
from perception.io.run_file import Run

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; padding: 0 16px; }
video.overlay { width: 100%; } h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 13px; } .note { color: #666; font-size: 13px; max-width: 900px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; } th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card span { color: #666; font-size: 12px; }
img.plot { max-width: 100%; display: block; margin: 8px 0 20px; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 10px; }
.sheet figure { margin: 0; } .sheet img { width: 100%; display: block; }
.sheet figcaption { font-size: 12px; color: #444; padding: 2px 0; }
"""


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(data: bytes, mime: str, alt: str, cls: str = "plot") -> str:
    return (f'<img class="{cls}" alt="{html.escape(alt)}" '
            f'src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">')


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{html.escape(value)}</b><span>{html.escape(label)}</span></div>'


def render(run: Run, metrics: RunMetrics, config: MetricsConfig, plots: list[tuple[str, bytes]],
           tiles: list[Tile], drive_name: str | None, video_name: str | None, video: bytes | None = None) -> str:
    """The page; `video` (the overlay MP4's bytes) is embedded and plays in the page, else `video_name` is
    linked."""
    first = run.detections[0].message if run.detections else None
    duration = (run.detections[-1].t_ns - run.detections[0].t_ns) / 1e9 if len(run.detections) > 1 else 0.0
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Replay report: "
             f"{html.escape(run.path.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Replay report: {html.escape(run.path.name)}</h1>",
             "<div class='meta'>" + " · ".join(html.escape(x) for x in [
                 f"drive {drive_name or 'not available'}", f"cameras {', '.join(run.rig.names)}",
                 f"model {first.diag.model_id if first else '–'}", f"{len(run.detections)} frame sets over "
                 f"{duration:.1f} s"] + ([f"video {video_name}"] if video_name else [])) + "</div>"]
    parts.append(_summary_cards(run, metrics))
    plot = dict(plots)
    if metrics.detection is not None:
        parts += ["<h2>Detection</h2>", _detection_table(metrics), _maybe(plot, "Precision-recall")]
        parts += ["<h2>Tracking</h2>", _tracking_table(metrics)]
        parts += ["<h2>Range, velocity and TTC errors</h2>", _errors_table(metrics),
                  "<p class='note'>Detections matched one to one to ground-truth boxes of their class "
                  f"(IoU ≥ {config.min_iou:g}); bands by true range. Range error is reported − true (bias = median "
                  f"of the signed error); TTC errors only where either TTC is below {config.ttc_horizon_s:g} s.</p>",
                  _maybe(plot, "Errors against distance")]
    else:
        parts.append("<p class='note'>No ground truth in the drive: detection, tracking, error and hint metrics "
                     "need labels (<code>/camera/&lt;name&gt;/ground_truth</code>).</p>")
    parts += ["<h2>Objects over time</h2>", _maybe(plot, "Detections over time"), _maybe(plot, "Bird-eye view")]
    parts += ["<h2>Control hints</h2>", _hints_section(metrics, config), _maybe(plot, "Hints over time")]
    parts += ["<h2>Latency</h2>", _latency_table(metrics), _maybe(plot, "Latency histogram"),
              _maybe(plot, "Latency timeline"), _health_table(run)]
    parts.append("<h2>Frames</h2>")
    if video is not None:
        parts.append("<video class='overlay' controls muted playsinline preload='metadata' "
                     f"src='data:video/mp4;base64,{base64.b64encode(video).decode('ascii')}'></video>")
    elif video_name is not None:
        parts.append(f"<p><a href='{html.escape(video_name)}'>overlay video: {html.escape(video_name)}</a></p>")
    if tiles:
        parts.append("<p class='note'>" + ("Camera frames with the most missed + false detections, worst first. "
                                           "Reported boxes in their class colour; <b>magenta</b>: matches no "
                                           "ground truth; <b>red dashed</b>: ground truth nobody reported; thin "
                                           "white: ground truth that was found." if metrics.images else
                                           "Frame sets spread over the run (no ground truth to rank them).") + "</p>")
        parts.append("<div class='sheet'>" + "".join(
            f"<figure>{_img(t.jpeg, 'image/jpeg', t.caption, 'frame')}<figcaption>{html.escape(t.caption)}"
            "</figcaption></figure>" for t in tiles) + "</div>")
    else:
        parts.append("<p class='note'>No camera frames: the run has no copied inputs and no drive was found "
                     "(pass --drive).</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _maybe(plots: dict[str, bytes], title: str) -> str:
    return _img(plots[title], "image/png", title) if title in plots else ""


def _summary_cards(run: Run, metrics: RunMetrics) -> str:
    cards = []
    if metrics.detection is not None:
        cards += [_card(_f(metrics.detection.map50), "mAP@0.5 (moderate)"),
                  _card(_f(metrics.detection.map), "mAP@[.5:.95] (moderate)")]
    if metrics.tracking is not None:
        t = metrics.tracking.total
        cards += [_card(_f(t.mota), "MOTA"), _card(_f(t.idf1), "IDF1"), _card(str(t.id_switches), "ID switches")]
    if metrics.hints is not None:
        brake = metrics.hints.stages["brake"]
        cards += [_card(f"{brake.on_time}/{brake.needed}", "brakes needed, caught on time"),
                  _card(str(brake.false), "false brakes")]
    total = metrics.latency.stages.get("total")
    if total is not None:
        cards.append(_card(f"{total.p99_ms:.1f} ms", "p99 processing per frame set"))
    states = Counter(m.message.state for m in run.health)
    if states:
        cards.append(_card(", ".join(f"{n} {s}" for s, n in states.most_common()), "health messages"))
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _detection_table(metrics: RunMetrics) -> str:
    rows = []
    for level, det in metrics.detection_levels.items():
        rows += [[level, name, int(det.gt_count[k]), int(det.det_count[k]), _f(det.ap(k, 0)), _f(det.ap(k))]
                 for k, name in enumerate(CLASSES)]
        rows.append([level, "all (mean over classes with ground truth)", int(det.gt_count.sum()),
                     int(det.det_count.sum()), _f(det.map50), _f(det.map)])
    note = (f"<p class='note'>The evaluation protocol of docs/evaluation.md: KITTI-style difficulty levels (boxes "
            "outside a level are ignored, neither hit nor miss), COCO procedure (101-point interpolated AP, up to "
            f"100 detections per camera frame and class) on {len(metrics.images)} labelled camera frames; "
            f"{metrics.unused_frames} of them were used by no frame set and count as all missed. An object seen by "
            f"several cameras of a frame set is scored once ({_other_views(metrics)} other views ignored: the node "
            "publishes a fused object with one camera's box). Objects "
            f"overlapping no labelled box (IoU &lt; 0.3): {_f(metrics.unmatched_per_frame)} per camera frame.</p>")
    return _table(["level", "class", "scored ground-truth boxes", "detections", "AP@0.5", "AP@[.5:.95]"],
                  rows) + note


def _other_views(metrics: RunMetrics) -> int:
    return sum(int((~im.scored_view).sum()) for im in metrics.images)


def _tracking_table(metrics: RunMetrics) -> str:
    tr = metrics.tracking
    rows = [[name, _f(c.mota), _f(c.idf1), c.id_switches, c.false_positives, c.misses, c.gt, c.frames]
            for name, c in [*tr.per_camera.items(), ("all cameras", tr.total)]]
    return _table(["camera", "MOTA", "IDF1", "ID switches", "false positives", "misses", "ground-truth boxes",
                   "frames"], rows)


def _errors_table(metrics: RunMetrics) -> str:
    kin = metrics.kinematics
    rows = []
    for b, (lo, hi) in enumerate(kin.bands):
        r, v, t = kin.stats["range"][b], kin.stats["velocity"][b], kin.stats["ttc"][b]
        rows.append([f"{lo:g}–{hi:g} m" if math.isfinite(hi) else f"≥ {lo:g} m", r.count, _f(r.median, 2), _f(r.p90, 2),
                     _f(r.bias, 2), v.count, _f(v.median, 2), _f(v.p90, 2), t.count, _f(t.median, 2), _f(t.p90, 2)])
    r, v, t = (kin.overall[q] for q in ("range", "velocity", "ttc"))
    rows.append(["all", r.count, _f(r.median, 2), _f(r.p90, 2), _f(r.bias, 2), v.count, _f(v.median, 2), _f(v.p90, 2),
                 t.count, _f(t.median, 2), _f(t.p90, 2)])
    return _table(["true range", "range n", "median |err| m", "p90 m", "bias m", "velocity n", "median m/s",
                   "p90 m/s", "TTC n", "median s", "p90 s"], rows)


def _hints_section(metrics: RunMetrics, config: MetricsConfig) -> str:
    h = metrics.hints
    if h is None:
        return "<p class='note'>No hint metrics (no ground truth for the frame sets).</p>"
    rows = []
    for name, e in h.stages.items():
        delay = float(np.median(e.delays_s)) if len(e.delays_s) else math.nan
        rows.append([name if name == "brake" else "prepare or brake", e.needed, e.on_time, e.late, e.missed,
                     e.fired, e.false, _f(e.recall, 2), _f(e.precision, 2), _f(delay, 2)])
    table = _table(["hint", "needed", "on time", "late", "missed", "fired", "false", "recall (on time)",
                    "precision", "median delay s"], rows)
    confusion = _table(["needed \\ hinted", *STAGES], [[STAGES[i], *h.confusion[i].tolist()] for i in range(3)])
    note = (f"<p class='note'>Needed from the true lead (ego corridor |y| ≤ {config.corridor_half_width_m:g} m): brake "
            f"below TTC {config.brake_ttc_s:g} s or gap {config.brake_gap_m:g} m, prepare below {config.prepare_ttc_s:g} s "
            f"or {config.prepare_gap_m:g} m. On time: fired at most {config.max_delay_s:g} s after the need began "
            f"(up to {config.early_s:g} s early counts). False: no need within {config.early_s:g} s before or "
            f"{config.release_s:g} s after. Frame sets per stage:</p>")
    return table + note + confusion


def _latency_table(metrics: RunMetrics) -> str:
    lat = metrics.latency
    if not lat.stages:
        return "<p class='note'>The messages carry no stage timings.</p>"
    rows = [[name, s.count, _f(s.mean_ms, 2), _f(s.p50_ms, 2), _f(s.p99_ms, 2), _f(s.max_ms, 2)]
            for name, s in lat.stages.items()]
    note = ("<p class='note'>From <code>diag.stage_ns</code> of every detections message; total is the node's own "
            "'total' stage if it reports one, else the sum of the stages.")
    if len(lat.health_p50_ms):
        note += (f" Capture → publish latency reported by the node's health messages: median p50 "
                 f"{np.median(lat.health_p50_ms):.1f} ms, median p99 {np.median(lat.health_p99_ms):.1f} ms.")
    return _table(["stage", "frame sets", "mean ms", "p50 ms", "p99 ms", "max ms"], rows) + note + "</p>"


def _health_table(run: Run) -> str:
    if not run.health:
        return ""
    reasons = Counter(r for m in run.health for r in m.message.reasons)
    states = Counter(m.message.state for m in run.health)
    rows = [[f"state {s}", n] for s, n in states.most_common()] + [[r, n] for r, n in reasons.most_common(10)]
    return "<h2>Health</h2>" + _table(["health state / reason", "messages"], rows)
