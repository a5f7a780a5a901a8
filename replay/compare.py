"""Regression check of a run against a golden run: objects matched frame by frame, tolerances, timing gates,
a human-readable diff (docs/replay.md).

    result = compare_runs("golden.mcap", "run.mcap", CompareConfig.load("tolerances.yaml"))
    print(format_diff(result)); sys.exit(0 if result.passed else 1)

Objects of one frame set (same `frame_ns`) are matched one to one within the same camera and class by IoU
(Hungarian; pairs below `objects.min_iou` never match). Matched objects are checked field by field
against the tolerances; unmatched ones are missing (golden only) or extra (run only). Track ids may be
numbered differently in the two runs, but a golden track must keep one run track for its whole life.
Hints are compared per frame set (brake stage exactly, the lead by the object it points at, numbers
within tolerance), health by state. Every difference is a finding; a budget per kind of finding (0 by
default) decides pass / fail. Timing gates compare stage times from the messages' diagnostics.
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from perception.errors import ConfigError
from perception.yaml_io import load_yaml
from perception.messaging.schemas import DetectionsMessage, HealthMessage, HintsMessage
from perception.config_base import ConfigBase, param
from replay.metrics.latency import stage_times_ms
from replay.metrics.matching import box_iou, match_boxes
from perception.io.run_file import Run, as_run

MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class ObjectTolerances(ConfigBase):
    """How two runs' objects are matched and how far a matched object's fields may move."""
    min_iou: float = param(0.5, "objects of the same camera and class match when their boxes overlap this much",
                           gt=0.0, le=1.0)
    score: float = param(0.05, "largest change of an object's score", ge=0.0)
    box_px: float = param(2.0, "largest change of any box coordinate", unit="px", ge=0.0)
    range_m: float = param(0.5, "largest change of range_m, plus distance_rel x the golden range", unit="m", ge=0.0)
    position_m: float = param(0.5, "largest change of the position (Euclidean), plus distance_rel x the golden "
                              "range", unit="m", ge=0.0)
    distance_rel: float = param(0.05, "range and position tolerances grow by this fraction of the golden range",
                                ge=0.0)
    velocity_mps: float = param(0.5, "largest change of the velocity (Euclidean)", unit="m/s", ge=0.0)
    ttc_s: float = param(0.3, "largest change of ttc_s, plus ttc_rel x the golden TTC; TTCs are clipped to "
                         "ttc_horizon_s first", unit="s", ge=0.0)
    ttc_rel: float = param(0.1, "the TTC tolerance grows by this fraction of the golden TTC", ge=0.0)
    ttc_horizon_s: float = param(10.0, "TTCs above this (including +inf: not closing) count as equal", unit="s",
                                 gt=0.0)
    max_missing_objects: int = param(0, "golden objects without a match allowed over the whole run", ge=0)
    max_extra_objects: int = param(0, "run objects without a golden match allowed over the whole run", ge=0)
    max_changed_objects: int = param(0, "matched objects with a field out of tolerance allowed", ge=0)
    max_id_changes: int = param(0, "times a golden track may map to a different run track than before", ge=0)


@dataclass(frozen=True)
class HintTolerances(ConfigBase):
    """How far the control hints may move; the brake stage and the lead's identity must not change."""
    range_m: float = param(0.5, "largest change of lead.gap_m and free_distance_m, plus distance_rel x golden",
                           unit="m", ge=0.0)
    distance_rel: float = param(0.05, "relative part of the range tolerance", ge=0.0)
    rel_speed_mps: float = param(0.5, "largest change of lead.rel_speed_mps", unit="m/s", ge=0.0)
    ttc_s: float = param(0.3, "largest change of lead.ttc_s (clipped to ttc_horizon_s), plus ttc_rel x golden",
                         unit="s", ge=0.0)
    ttc_rel: float = param(0.1, "relative part of the TTC tolerance", ge=0.0)
    ttc_horizon_s: float = param(10.0, "TTCs above this count as equal", unit="s", gt=0.0)
    speed_cap_mps: float = param(0.5, "largest change of speed_cap_mps", unit="m/s", ge=0.0)
    confidence: float = param(0.05, "largest change of confidence", ge=0.0)
    max_changed_frames: int = param(0, "frame sets whose hints differ beyond tolerance allowed", ge=0)


@dataclass(frozen=True)
class FrameTolerances(ConfigBase):
    """Frame sets (and health messages) present in only one of the runs."""
    max_missing_frames: int = param(0, "golden messages (any topic) with no run message at the same time", ge=0)
    max_extra_frames: int = param(0, "run messages (any topic) with no golden message at the same time", ge=0)
    check_health: bool = param(True, "health state and camera states must match at every health message")


@dataclass(frozen=True)
class TimingGates(ConfigBase):
    """Gates on a pipeline stage's time (diag.stage_ns), as openpilot's model_replay gates the model's
    execution time. Off by default: stage times depend on the machine, so gate only where the golden run
    was recorded on the same kind of machine (a 0 turns that gate off)."""
    enabled: bool = param(False, "apply the gates below (the diff always shows the timings)")
    warmup_frames: int = param(5, "frame sets skipped at the start (engine warm-up, caches)", ge=0)
    max_mean_ratio: float = param(1.2, "run mean / golden mean of the stage time may not exceed this", ge=0.0)
    max_max_ratio: float = param(2.0, "run max / golden max of the stage time may not exceed this", ge=0.0)
    max_mean_ms: float = param(0.0, "absolute limit on the run's mean stage time (0: off)", unit="ms", ge=0.0)
    max_max_ms: float = param(0.0, "absolute limit on the run's largest stage time (0: off)", unit="ms", ge=0.0)


TIMED_STAGE = "engine"
_SECTIONS = {"objects": ObjectTolerances, "hints": HintTolerances, "frames": FrameTolerances,
             "timing": TimingGates}


@dataclass(frozen=True)
class CompareConfig:
    """All tolerances; a YAML file holds any subset, by section (`objects`, `hints`, `frames`, `timing`)."""
    objects: ObjectTolerances = field(default_factory=ObjectTolerances)
    hints: HintTolerances = field(default_factory=HintTolerances)
    frames: FrameTolerances = field(default_factory=FrameTolerances)
    timing: TimingGates = field(default_factory=TimingGates)

    @staticmethod
    def from_dict(d: object, where: str) -> "CompareConfig":
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: must be a mapping of sections ({', '.join(_SECTIONS)}), "
                              f"got {type(d).__name__}")
        for key in d:
            if key not in _SECTIONS:
                raise ConfigError(f"{where}: unknown section {key!r} (sections: {', '.join(_SECTIONS)})")
        return CompareConfig(**{name: cls.from_dict(d.get(name), f"{where}: {name}") for name, cls in _SECTIONS.items()})

    @staticmethod
    def load(path: str | Path) -> "CompareConfig":
        return CompareConfig.from_dict(load_yaml(path, MAX_CONFIG_BYTES, ConfigError), str(path))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {f.name: getattr(getattr(self, name), f.name) for f in fields(cls)}
                for name, cls in _SECTIONS.items()}


@dataclass(frozen=True)
class Finding:
    """One difference between the runs. kind: missing frame, extra frame, missing object, extra object,
    changed object, id change, hints, health, timing."""
    kind: str
    t_ns: int | None   # the frame (message) time it concerns; None for the whole run
    text: str
    subject: str = ""  # the object it concerns, e.g. "front truck #102" (golden track; run track if extra)


@dataclass(frozen=True)
class StageTiming:
    frames: int
    mean_ms: float
    max_ms: float
    p50_ms: float
    p99_ms: float


@dataclass
class CompareResult:
    golden: Path
    run: Path
    config: CompareConfig
    findings: list[Finding]
    failures: list[str]              # budgets exceeded; empty = pass
    frames: dict[str, tuple[int, int, int]]  # topic -> (golden, run, in both)
    objects: tuple[int, int, int]    # golden, run, matched (over the frame sets in both)
    mean_iou: float                  # of matched objects (NaN: none)
    largest: dict[str, float]        # field -> largest change over matched objects
    timing: tuple[StageTiming | None, StageTiming | None]  # golden, run (TIMED_STAGE)
    start_ns: int                    # first golden frame time (diff times are relative to it)

    @property
    def passed(self) -> bool:
        return not self.failures

    def counts(self) -> Counter:
        return Counter(f.kind for f in self.findings)


def compare_runs(golden: Run | str | Path, run: Run | str | Path, config: CompareConfig | None = None) -> CompareResult:
    config = config or CompareConfig()
    golden, run = as_run(golden), as_run(run)
    findings: list[Finding] = []
    frames = {}
    for topic in ("detections", "hints", "health"):
        g = {m.t_ns: m for m in golden.topic(topic)}
        r = {m.t_ns: m for m in run.topic(topic)}
        frames[topic] = (len(g), len(r), len(g.keys() & r.keys()))
        findings += [Finding("missing frame", t, f"{topic}: golden has a message, the run has none")
                     for t in sorted(g.keys() - r.keys())]
        findings += [Finding("extra frame", t, f"{topic}: the run has a message, golden has none")
                     for t in sorted(r.keys() - g.keys())]
    objects = _ObjectComparison(config.objects, golden, run)
    findings += objects.findings
    findings += _compare_hints(config.hints, golden, run, objects.id_maps)
    if config.frames.check_health:
        findings += _compare_health(golden, run)
    timing = (_stage_timing(golden, config.timing), _stage_timing(run, config.timing))
    timing_failures = _timing_gates(config.timing, *timing)
    findings += [Finding("timing", None, text) for text in timing_failures]
    findings.sort(key=lambda f: (-1 if f.t_ns is None else f.t_ns))

    counts = Counter(f.kind for f in findings)
    o, h, fr = config.objects, config.hints, config.frames
    budgets = {"missing frame": fr.max_missing_frames, "extra frame": fr.max_extra_frames,
               "missing object": o.max_missing_objects, "extra object": o.max_extra_objects,
               "changed object": o.max_changed_objects, "id change": o.max_id_changes}
    failures = [f"{counts[kind]} {kind}s (allowed {limit})" for kind, limit in budgets.items() if counts[kind] > limit]
    hint_frames = len({f.t_ns for f in findings if f.kind == "hints"})
    if hint_frames > h.max_changed_frames:
        failures.append(f"{hint_frames} frame sets with changed hints (allowed {h.max_changed_frames})")
    if counts["health"]:
        failures.append(f"{counts['health']} health messages differ")
    failures += [f"timing: {text}" for text in timing_failures]
    starts = [m.t_ns for topic in ("detections", "hints", "health") for m in golden.topic(topic)[:1]]
    return CompareResult(golden.path, run.path, config, findings, failures, frames,
                         (objects.golden_count, objects.run_count, objects.matched), objects.mean_iou,
                         objects.largest, timing, min(starts) if starts else 0)


def update_golden(golden: str | Path, run: str | Path) -> None:
    """Replaces the golden run by the run (atomically: a reader never sees half a file)."""
    golden, run = Path(golden), Path(run)
    tmp = golden.with_name(f".{golden.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(run, tmp)
        os.replace(tmp, golden)
    finally:
        tmp.unlink(missing_ok=True)


# ---- objects ---------------------------------------------------------------------------------------------

def _clip_ttc(value: np.ndarray, horizon: float) -> np.ndarray:
    return np.where(np.isnan(value), value, np.minimum(value, horizon))


def _delta(golden: np.ndarray, run: np.ndarray) -> np.ndarray:
    """|run - golden| per row (Euclidean over a trailing axis); 0 where both are NaN or equal infinities,
    inf where only one is NaN."""
    golden = np.asarray(golden, np.float64)
    run = np.asarray(run, np.float64)
    with np.errstate(invalid="ignore"):
        d = np.abs(run - golden)
    same = (golden == run) | (np.isnan(golden) & np.isnan(run))
    d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))
    return np.sqrt((d ** 2).sum(axis=-1)) if d.ndim > 1 else d


def _finite_or_zero(x: np.ndarray) -> np.ndarray:
    x = np.abs(np.asarray(x, np.float64))
    return np.where(np.isfinite(x), x, 0.0)


class _ObjectComparison:
    """Matches every common frame set's objects and checks the matched pairs."""

    def __init__(self, tol: ObjectTolerances, golden: Run, run: Run):
        self.tol = tol
        self.findings: list[Finding] = []
        self.id_maps: dict[int, dict[int, int]] = {}  # frame_ns -> {golden track id: run track id}
        self.golden_count = self.run_count = self.matched = 0
        self.largest: dict[str, float] = defaultdict(float)
        ious: list[float] = []
        self._track_map: dict[int, int] = {}
        run_by_t = {m.t_ns: m for m in run.detections}
        for g in golden.detections:
            r = run_by_t.get(g.t_ns)
            if r is not None:
                ious += self._frame(g.t_ns, g.message, r.message)
        self.mean_iou = float(np.mean(ious)) if ious else math.nan

    def _match(self, g_ids: np.ndarray, r_ids: np.ndarray, iou: np.ndarray,
               allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Objects with the same track id (same camera and class, IoU >= min_iou) first, the rest by IoU."""
        same = allowed & (iou >= self.tol.min_iou) & (g_ids[:, None] == r_ids[None, :])
        gi, ri = [], []
        for a, b in zip(*np.nonzero(same)):
            if a not in gi and b not in ri:
                gi.append(int(a))
                ri.append(int(b))
        g_rest = np.setdiff1d(np.arange(len(g_ids)), gi)
        r_rest = np.setdiff1d(np.arange(len(r_ids)), ri)
        a2, b2 = match_boxes(iou[np.ix_(g_rest, r_rest)], self.tol.min_iou, allowed[np.ix_(g_rest, r_rest)])
        return (np.concatenate([np.array(gi, np.intp), g_rest[a2]]).astype(np.intp),
                np.concatenate([np.array(ri, np.intp), r_rest[b2]]).astype(np.intp))

    def _frame(self, t_ns: int, g: DetectionsMessage, r: DetectionsMessage) -> list[float]:
        go, ro = g.objects, r.objects
        self.golden_count += len(go)
        self.run_count += len(ro)
        g_cam = np.array(g.diag.cameras, dtype=object)[go.camera] if len(go) else np.zeros(0, object)
        r_cam = np.array(r.diag.cameras, dtype=object)[ro.camera] if len(ro) else np.zeros(0, object)
        g_cls = np.array(g.classes, dtype=object)[go.cls] if len(go) else np.zeros(0, object)
        r_cls = np.array(r.classes, dtype=object)[ro.cls] if len(ro) else np.zeros(0, object)
        iou = box_iou(go.box, ro.box)
        if len(go) and len(ro):  # identical boxes match, degenerate ones too (their IoU with anything is 0)
            iou = np.where((go.box[:, None, :] == ro.box[None, :, :]).all(axis=2), 1.0, iou)
        allowed = (g_cam[:, None] == r_cam[None, :]) & (g_cls[:, None] == r_cls[None, :])
        gi, ri = self._match(go.track_id, ro.track_id, iou, allowed)
        self.matched += len(gi)
        self.id_maps[t_ns] = {int(go.track_id[a]): int(ro.track_id[b]) for a, b in zip(gi, ri)}

        def name(o, cam, cls, i: int) -> str:
            return f"{cam[i]} {cls[i]} #{int(o.track_id[i])}"

        def where(o, i: int) -> str:
            box = ",".join(f"{v:.0f}" for v in o.box[i])
            return f"box ({box}) score {float(o.score[i]):.2f}"

        for i in sorted(set(range(len(go))) - set(gi.tolist())):
            why = (f"best IoU with a run {g_cls[i]} {float(iou[i][allowed[i]].max()):.2f} < {self.tol.min_iou:g}"
                   if allowed[i].any() else f"no run {g_cls[i]} in {g_cam[i]}")
            self.findings.append(Finding("missing object", t_ns, f"{name(go, g_cam, g_cls, i)} {where(go, i)} ({why})",
                                         name(go, g_cam, g_cls, i)))
        for j in sorted(set(range(len(ro))) - set(ri.tolist())):
            self.findings.append(Finding("extra object", t_ns, f"{name(ro, r_cam, r_cls, j)} {where(ro, j)}: in the "
                                         "run only", name(ro, r_cam, r_cls, j)))
        if len(gi) == 0:
            return []
        tol = self.tol
        g_range = _finite_or_zero(go.range_m[gi])
        g_ttc, r_ttc = _clip_ttc(go.ttc_s[gi], tol.ttc_horizon_s), _clip_ttc(ro.ttc_s[ri], tol.ttc_horizon_s)
        n = len(gi)
        # field: (golden values, run values, |change|, allowed change, number format, unit)
        checks = {
            "score": (go.score[gi], ro.score[ri], _delta(go.score[gi], ro.score[ri]), np.full(n, tol.score),
                      "{:.3f}", ""),
            "box": (go.box[gi], ro.box[ri], np.abs(go.box[gi].astype(np.float64) - ro.box[ri]).max(axis=1),
                    np.full(n, tol.box_px), "{:.1f}", " px"),
            "range": (go.range_m[gi], ro.range_m[ri], _delta(go.range_m[gi], ro.range_m[ri]),
                      tol.range_m + tol.distance_rel * g_range, "{:.2f}", " m"),
            "position": (go.position[gi], ro.position[ri], _delta(go.position[gi], ro.position[ri]),
                         tol.position_m + tol.distance_rel * g_range, "{:.2f}", " m"),
            "velocity": (go.velocity[gi], ro.velocity[ri], _delta(go.velocity[gi], ro.velocity[ri]),
                         np.full(n, tol.velocity_mps), "{:.2f}", " m/s"),
            "ttc": (go.ttc_s[gi], ro.ttc_s[ri], _delta(g_ttc, r_ttc), tol.ttc_s + tol.ttc_rel * _finite_or_zero(g_ttc),
                    "{:.2f}", " s"),
        }
        for key, (_, _, delta, _, _, _) in checks.items():
            finite = delta[np.isfinite(delta)]
            if finite.size:
                self.largest[key] = max(self.largest[key], float(finite.max()))
        for k, (a, b) in enumerate(zip(gi, ri)):
            parts = [f"{key} {_fmt(g_values[k], fmt)} -> {_fmt(r_values[k], fmt)}{unit} "
                     f"(|d| {_fmt(delta[k], fmt)} > {_fmt(limit[k], fmt)})"
                     for key, (g_values, r_values, delta, limit, fmt, unit) in checks.items() if delta[k] > limit[k]]
            if parts:
                self.findings.append(Finding("changed object", t_ns, f"{name(go, g_cam, g_cls, a)} ~ run "
                                             f"#{int(ro.track_id[b])}: " + "; ".join(parts), name(go, g_cam, g_cls, a)))
            golden_id, run_id = int(go.track_id[a]), int(ro.track_id[b])
            before = self._track_map.get(golden_id)
            if before is not None and before != run_id:
                self.findings.append(Finding("id change", t_ns, f"{name(go, g_cam, g_cls, a)} was run track "
                                             f"#{before}, now #{run_id}", name(go, g_cam, g_cls, a)))
            self._track_map[golden_id] = run_id
        return iou[gi, ri].tolist()


def _fmt(value: Any, fmt: str) -> str:
    value = np.asarray(value, np.float64)
    if value.ndim:
        return "(" + ",".join(_fmt(v, fmt) for v in value) + ")"
    return fmt.format(float(value)) if np.isfinite(value) else str(float(value))


# ---- hints and health ------------------------------------------------------------------------------------

def _compare_hints(tol: HintTolerances, golden: Run, run: Run, id_maps: dict[int, dict[int, int]]) -> list[Finding]:
    findings = []
    run_by_t = {m.t_ns: m.message for m in run.hints}
    for recorded in golden.hints:
        g: HintsMessage = recorded.message
        r = run_by_t.get(recorded.t_ns)
        if r is None:
            continue
        id_map = id_maps.get(recorded.t_ns, {})
        parts = []
        if g.brake != r.brake:
            parts.append(f"brake {g.brake} -> {r.brake}")
        if (g.lead is None) != (r.lead is None):
            parts.append("lead " + ("none" if g.lead is None else f"#{g.lead.track_id}") + " -> " +
                         ("none" if r.lead is None else f"#{r.lead.track_id}"))
        elif g.lead is not None and r.lead is not None:
            mapped = id_map.get(g.lead.track_id)
            if mapped is not None and mapped != r.lead.track_id:
                parts.append(f"lead is another object: golden #{g.lead.track_id} (run #{mapped}) -> run "
                             f"#{r.lead.track_id}")
            parts += _number_checks(tol, [
                ("lead.gap_m", g.lead.gap_m, r.lead.gap_m, tol.range_m + tol.distance_rel *
                 _finite_or_zero(g.lead.gap_m), " m"),
                ("lead.rel_speed_mps", g.lead.rel_speed_mps, r.lead.rel_speed_mps, tol.rel_speed_mps, " m/s"),
                ("lead.ttc_s", _clip_ttc(np.float64(g.lead.ttc_s), tol.ttc_horizon_s),
                 _clip_ttc(np.float64(r.lead.ttc_s), tol.ttc_horizon_s),
                 tol.ttc_s + tol.ttc_rel * _finite_or_zero(_clip_ttc(np.float64(g.lead.ttc_s), tol.ttc_horizon_s)),
                 " s"),
            ])
        parts += _number_checks(tol, [
            ("speed_cap_mps", g.speed_cap_mps, r.speed_cap_mps, tol.speed_cap_mps, " m/s"),
            ("free_distance_m", g.free_distance_m, r.free_distance_m,
             tol.range_m + tol.distance_rel * _finite_or_zero(g.free_distance_m), " m"),
            ("confidence", g.confidence, r.confidence, tol.confidence, ""),
        ])
        golden_cut_ins = sorted(id_map.get(int(i), -1) for i in g.cut_in_ids)
        run_cut_ins = sorted(int(i) for i in r.cut_in_ids)
        if len(golden_cut_ins) != len(run_cut_ins) or any(
                a != b for a, b in zip(golden_cut_ins, run_cut_ins) if a != -1):
            parts.append(f"cut-ins golden {g.cut_in_ids.tolist()} -> run {run_cut_ins}")
        if parts:
            findings.append(Finding("hints", recorded.t_ns, "hints: " + "; ".join(parts)))
    return findings


def _number_checks(tol: HintTolerances, checks: Iterable[tuple[str, float, float, float, str]]) -> list[str]:
    parts = []
    for key, g, r, limit, unit in checks:
        d = float(_delta(np.float64(g), np.float64(r)))
        if d > float(limit):
            parts.append(f"{key} {_fmt(g, '{:.2f}')} -> {_fmt(r, '{:.2f}')}{unit} (|d| {_fmt(d, '{:.2f}')} > "
                         f"{float(limit):.2f})")
    return parts


def _compare_health(golden: Run, run: Run) -> list[Finding]:
    findings = []
    run_by_t = {m.t_ns: m.message for m in run.health}
    for recorded in golden.health:
        g: HealthMessage = recorded.message
        r = run_by_t.get(recorded.t_ns)
        if r is None:
            continue
        if g.state != r.state or g.camera_states != r.camera_states:
            findings.append(Finding("health", recorded.t_ns,
                                    f"health: state {g.state} {list(g.camera_states)} -> {r.state} "
                                    f"{list(r.camera_states)}" + (f" (run reasons: {'; '.join(r.reasons)})"
                                                                  if r.reasons else "")))
    return findings


# ---- timing ----------------------------------------------------------------------------------------------

def _stage_timing(run: Run, gates: TimingGates) -> StageTiming | None:
    times = stage_times_ms(run.detections[gates.warmup_frames:]).get(TIMED_STAGE)
    if times is None or not len(times):
        return None
    return StageTiming(len(times), float(times.mean()), float(times.max()), float(np.percentile(times, 50)),
                       float(np.percentile(times, 99)))


def _timing_gates(gates: TimingGates, golden: StageTiming | None, run: StageTiming | None) -> list[str]:
    if not gates.enabled:
        return []
    if run is None:
        return [f"the run has no {TIMED_STAGE!r} stage times (after {gates.warmup_frames} warm-up frame sets)"]
    failures = []
    if gates.max_mean_ms and run.mean_ms > gates.max_mean_ms:
        failures.append(f"mean {TIMED_STAGE} time {run.mean_ms:.2f} ms > {gates.max_mean_ms:g} ms")
    if gates.max_max_ms and run.max_ms > gates.max_max_ms:
        failures.append(f"max {TIMED_STAGE} time {run.max_ms:.2f} ms > {gates.max_max_ms:g} ms")
    if gates.max_mean_ratio or gates.max_max_ratio:
        if golden is None:
            failures.append(f"golden has no {TIMED_STAGE!r} stage times to compare with")
            return failures
        if gates.max_mean_ratio and run.mean_ms > gates.max_mean_ratio * golden.mean_ms:
            failures.append(f"mean {TIMED_STAGE} time {run.mean_ms:.2f} ms is {run.mean_ms / golden.mean_ms:.2f}x "
                            f"golden's {golden.mean_ms:.2f} ms (allowed {gates.max_mean_ratio:g}x)")
        if gates.max_max_ratio and run.max_ms > gates.max_max_ratio * golden.max_ms:
            failures.append(f"max {TIMED_STAGE} time {run.max_ms:.2f} ms is {run.max_ms / golden.max_ms:.2f}x "
                            f"golden's {golden.max_ms:.2f} ms (allowed {gates.max_max_ratio:g}x)")
    return failures


# ---- the diff --------------------------------------------------------------------------------------------

def format_diff(result: CompareResult, max_frames: int = 30) -> str:
    """The human-readable report: summary, then the findings frame by frame (times relative to the first
    golden frame), then the verdict."""
    lines = [f"golden {result.golden}", f"run    {result.run}"]
    for topic, (g, r, both) in result.frames.items():
        lines.append(f"  {topic:<10} golden {g:>6}  run {r:>6}  in both {both:>6}")
    g, r, m = result.objects
    lines.append(f"  objects    golden {g:>6}  run {r:>6}  matched {m:>5}"
                 + (f" (mean IoU {result.mean_iou:.3f})" if m else ""))
    if result.largest:
        units = {"score": "", "box": " px", "range": " m", "position": " m", "velocity": " m/s", "ttc": " s"}
        lines.append("  largest change of a matched object: " + ", ".join(
            f"{k} {v:.3g}{units[k]}" for k, v in result.largest.items()))
    lines.append("  " + _format_timing(result))
    counts = result.counts()
    if counts:
        lines.append("  findings: " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))
    by_subject: dict[tuple[str, str], list[int]] = defaultdict(list)
    for f in result.findings:
        if f.subject:
            by_subject[(f.kind, f.subject)].append(f.t_ns)
    if by_subject:
        lines.append("  objects with the most findings:")
        worst = sorted(by_subject.items(), key=lambda item: (-len(item[1]), item[0]))[:8]
        for (kind, subject), times in worst:
            first, last = ((t - result.start_ns) / 1e9 for t in (min(times), max(times)))
            when = f"at +{first:.3f} s" if len(times) == 1 else f"in {len(times)} frame sets (+{first:.3f} .. +{last:.3f} s)"
            lines.append(f"    {subject}: {kind} {when}")
    by_frame: dict[int | None, list[Finding]] = defaultdict(list)
    for f in result.findings:
        by_frame[f.t_ns].append(f)
    shown = list(by_frame.items())[:max_frames]
    for t_ns, found in shown:
        lines.append("")
        lines.append("whole run:" if t_ns is None else
                     f"frame +{(t_ns - result.start_ns) / 1e9:.3f} s (t_ns {t_ns}):")
        lines += [f"  {f.kind}: {f.text}" if f.kind not in ("hints", "health") else f"  {f.text}" for f in found]
    if len(by_frame) > len(shown):
        lines.append(f"\n... and {len(by_frame) - len(shown)} more frames with findings (--max-frames)")
    lines.append("")
    lines.append("PASS: within tolerances" if result.passed else "FAIL: " + "; ".join(result.failures))
    return "\n".join(lines)


def _format_timing(result: CompareResult) -> str:
    golden, run = result.timing
    gates = result.config.timing

    def one(t: StageTiming | None) -> str:
        return "none" if t is None else f"mean {t.mean_ms:.2f} ms, max {t.max_ms:.2f} ms"

    text = f"{TIMED_STAGE} time (after {gates.warmup_frames} warm-up frame sets): golden {one(golden)} | run {one(run)}"
    if golden is not None and run is not None and golden.mean_ms > 0 and golden.max_ms > 0:
        text += f" | ratio mean {run.mean_ms / golden.mean_ms:.2f}x, max {run.max_ms / golden.max_ms:.2f}x"
    return text + ("" if gates.enabled else " [timing gates off]")
