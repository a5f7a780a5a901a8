"""The report's plots, each a PNG (matplotlib's Agg canvas: no display, no global pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from perception.labels import CLASSES, GroundTruth
from replay.metrics import RunMetrics
from perception.eval import IOU_THRESHOLDS, RECALL_THRESHOLDS
from replay.metrics.hints import STAGES
from perception.io.overlay import class_color
from perception.io.run_file import Run

_STAGE_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
                 "#64b5cd")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _figure(width: float = 9.0, height: float = 3.6) -> Figure:
    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def _finite(values: Sequence[float]) -> np.ndarray:
    """inf (no limit) is not drawn."""
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def _seconds(t_ns: np.ndarray, start_ns: int) -> np.ndarray:
    return (np.asarray(t_ns, np.int64) - start_ns) / 1e9


def latency_histogram(metrics: RunMetrics) -> bytes | None:
    times = metrics.latency.times_ms
    if not times:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    top = max(float(np.percentile(t, 99.5)) for t in times.values() if len(t)) * 1.1 or 1.0
    bins = np.linspace(0, top, 60)
    for k, (stage, values) in enumerate(times.items()):
        stats = metrics.latency.stages[stage]
        ax.hist(np.minimum(values, top), bins=bins, histtype="step", linewidth=2.2 if stage == "total" else 1.4,
                color="black" if stage == "total" else _STAGE_COLORS[k % len(_STAGE_COLORS)],
                label=f"{stage}: p50 {stats.p50_ms:.2f} / p99 {stats.p99_ms:.2f} ms")
    ax.set_xlabel("time per frame set (ms); the last bin holds everything beyond it")
    ax.set_ylabel("frame sets")
    ax.legend(fontsize=8)
    ax.set_title("Latency per stage")
    return _png(fig)


def latency_timeline(metrics: RunMetrics, start_ns: int) -> bytes | None:
    lat = metrics.latency
    stages = [s for s in lat.times_ms if s != "total"]
    if not stages:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    frames = np.unique(np.concatenate([lat.frame_ns[s] for s in stages]))
    stacked = np.zeros((len(stages), len(frames)))
    for k, stage in enumerate(stages):
        stacked[k, np.searchsorted(frames, lat.frame_ns[stage])] = lat.times_ms[stage]
    ax.stackplot(_seconds(frames, start_ns), stacked, labels=stages,
                 colors=[_STAGE_COLORS[k % len(_STAGE_COLORS)] for k in range(len(stages))], alpha=0.85)
    if "total" in lat.times_ms and "total" in lat.frame_ns and len(lat.times_ms["total"]):
        ax.plot(_seconds(lat.frame_ns["total"], start_ns), lat.times_ms["total"], color="black", linewidth=0.8,
                label="total")
    if len(lat.health_ns):
        ax.plot(_seconds(lat.health_ns, start_ns), lat.health_p99_ms, "o--", color="#c44e52", markersize=3,
                linewidth=0.8, label="capture->publish p99 (health)")
    ax.set_xlabel("drive time (s)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8, ncol=4, loc="upper left")
    ax.set_title("Stage times over the drive")
    return _png(fig)


def precision_recall(metrics: RunMetrics) -> bytes | None:
    det = metrics.detection
    if det is None or not det.gt_count.any():
        return None
    fig = _figure(9.0, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, t in zip(axes, (0, int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0]))):
        for k, name in enumerate(CLASSES):
            if det.gt_count[k] == 0:
                continue
            ax.plot(RECALL_THRESHOLDS, det.precision[t, :, k], color=class_color(name), linewidth=1.8,
                    label=f"{name}: AP {det.ap(k, t):.3f} ({det.gt_count[k]} boxes)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_title(f"IoU {IOU_THRESHOLDS[t]:.2f}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("precision (interpolated)")
    fig.suptitle("Precision-recall per class")
    return _png(fig)


def errors_by_distance(metrics: RunMetrics) -> bytes | None:
    kin = metrics.kinematics
    if kin is None or not any(len(v) for v in kin.error.values()):
        return None
    fig = _figure(10.0, 3.6)
    axes = fig.subplots(1, 3)
    titles = {"range": ("range error (m, signed)", True), "velocity": ("|velocity error| (m/s)", False),
              "ttc": ("|TTC error| (s)", False)}
    for ax, (quantity, (title, signed)) in zip(axes, titles.items()):
        x, y = kin.true_range[quantity], kin.error[quantity]
        ax.scatter(x, y, s=6, alpha=0.45, color="#4c72b0", linewidths=0)
        centres, medians, p90s = [], [], []
        for (lo, hi), stats in zip(kin.bands, kin.stats[quantity]):
            if stats.count:
                centres.append(float(np.median(x[(x >= lo) & (x < hi)])))
                medians.append(stats.bias if signed else stats.median)
                p90s.append(stats.p90)
        ax.plot(centres, medians, "o-", color="black", label="median" + (" (bias)" if signed else ""))
        ax.plot(centres, p90s, "s--", color="#c44e52", label="p90 of |error|")
        if signed:
            ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("true range (m)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Errors against distance (matched objects)")
    return _png(fig)


def detections_over_time(run: Run, metrics: RunMetrics, start_ns: int) -> bytes | None:
    if not run.detections:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    t = _seconds([m.t_ns for m in run.detections], start_ns)
    labelled: dict[int, np.ndarray] = {}   # frame set -> labelled boxes per class
    for im in metrics.images:
        if im.frame_ns is not None:
            labelled.setdefault(im.frame_ns, np.zeros(len(CLASSES), np.int64))
            np.add.at(labelled[im.frame_ns], im.gt_cls, 1)
    frames = sorted(labelled)
    for k, name in enumerate(CLASSES):
        counts = np.array([int((np.array(m.message.classes, dtype=object)[m.message.objects.cls] == name).sum())
                           if len(m.message.objects) else 0 for m in run.detections])
        truth = np.array([labelled[f][k] for f in frames])
        if counts.any() or truth.any():
            ax.plot(t, counts, drawstyle="steps-post", color=class_color(name), label=f"{name}")
        if truth.any():
            ax.plot(_seconds(frames, start_ns), truth, drawstyle="steps-post", color=class_color(name),
                    linestyle="--", linewidth=1, label=f"{name} (ground truth)")
    ax.set_xlabel("drive time (s)")
    ax.set_ylabel("objects per frame set (all cameras)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Objects over time: reported (solid) and labelled (dashed)")
    return _png(fig)


def hints_over_time(run: Run, metrics: RunMetrics, start_ns: int) -> bytes | None:
    if not run.hints:
        return None
    fig = _figure(9.0, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1.4))
    t = _seconds([m.t_ns for m in run.hints], start_ns)
    stage = [STAGES.index(m.message.brake) for m in run.hints]
    top.plot(t, stage, drawstyle="steps-post", color="#c44e52", linewidth=2, label="brake hint")
    if metrics.hints is not None:
        top.plot(_seconds(metrics.hints.t_ns, start_ns), metrics.hints.needed, drawstyle="steps-post", color="black",
                 linestyle="--", label="needed (ground truth)")
    top.set_yticks(range(3), STAGES)
    top.legend(fontsize=8, loc="upper left")
    top.set_title("Control hints over time")
    ttc = [m.message.lead.ttc_s if m.message.lead is not None else np.nan for m in run.hints]
    bottom.plot(t, np.clip(ttc, 0, 12), color="#4c72b0", label="lead TTC")
    if metrics.hints is not None:
        bottom.plot(_seconds(metrics.hints.t_ns, start_ns), np.clip(metrics.hints.true_ttc_s, 0, 12),
                    color="black", linestyle=":", label="true lead TTC")
    bottom.set_ylabel("TTC (s, clipped at 12)")
    bottom.set_xlabel("drive time (s)")
    bottom.grid(alpha=0.3)
    right = bottom.twinx()
    right.plot(t, _finite([m.message.free_distance_m for m in run.hints]), color="#55a868", label="free distance")
    right.plot(t, _finite([m.message.speed_cap_mps for m in run.hints]), color="#8172b3", linestyle="--",
               label="speed cap")
    right.set_ylabel("free distance (m) / speed cap (m/s)")
    lines = bottom.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    bottom.legend(lines, [line.get_label() for line in lines], fontsize=8, ncol=4, loc="upper right")
    return _png(fig)


def bird_eye_view(run: Run, labels: Sequence[GroundTruth] | None) -> bytes | None:
    """Tracks from above (vehicle frame: x forward up the page, y left to the left), one line per track in
    its class colour, against the ground-truth objects' paths (grey)."""
    tracks: dict[int, tuple[str, list[tuple[float, float]]]] = {}
    for recorded in run.detections:
        m = recorded.message
        o = m.objects
        for i in range(len(o)):
            if np.all(np.isfinite(o.position[i, :2])):
                entry = tracks.setdefault(int(o.track_id[i]), (m.classes[o.cls[i]], []))
                entry[1].append((float(o.position[i, 0]), float(o.position[i, 1])))
    if not tracks:
        return None
    truth: dict[int, dict[int, tuple[float, float]]] = {}
    for gt in labels or ():
        for obj in gt.objects:
            truth.setdefault(obj.id, {})[gt.t_ns] = (obj.position[0], obj.position[1])
    fig = _figure(6.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    for k, path in enumerate(truth.values()):
        xy = np.array([path[t] for t in sorted(path)])
        ax.plot(xy[:, 1], xy[:, 0], color="0.6", linewidth=4, alpha=0.5, label="ground truth" if k == 0 else None)
    shown: set[str] = set()
    for cls, points in tracks.values():
        xy = np.array(points)
        ax.plot(xy[:, 1], xy[:, 0], ".-", color=class_color(cls), markersize=2, linewidth=1,
                label=cls if cls not in shown else None)
        shown.add(cls)
    ax.plot([0], [0], marker="^", color="black", markersize=10, linestyle="none", label="ego (vehicle origin)")
    ax.invert_xaxis()   # +y (left) on the left, as seen from above facing forward
    ax.set_xlabel("y, left (m)")
    ax.set_ylabel("x forward (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_all(run: Run, metrics: RunMetrics, start_ns: int) -> list[tuple[str, bytes]]:
    plots: Sequence[tuple[str, bytes | None]] = (
        ("Latency histogram", latency_histogram(metrics)),
        ("Latency timeline", latency_timeline(metrics, start_ns)),
        ("Precision-recall", precision_recall(metrics)),
        ("Errors against distance", errors_by_distance(metrics)),
        ("Detections over time", detections_over_time(run, metrics, start_ns)),
        ("Hints over time", hints_over_time(run, metrics, start_ns)),
    )
    return [(title, png) for title, png in plots if png is not None]
