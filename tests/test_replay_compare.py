"""Golden-run comparison: matching, tolerances, budgets, timing gates, the diff, and the determinism check."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.messaging.schemas import OBJECT_FIELDS, DetectionsMessage, HintsMessage, WireObjects
from replay.compare import CompareConfig, TimingGates, compare_runs, format_diff, update_golden
from replay.determinism import assert_runs_identical, run_differences
from perception.io.run_file import load_run
from tests.test_replay_support import T0, record, simulated_outputs, small_rig, write_drive


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap")


@pytest.fixture(scope="module")
def golden(drive, tmp_path_factory):
    return load_run(record(tmp_path_factory.mktemp("golden") / "golden.mcap", small_rig(), simulated_outputs(drive),
                           drive))


def _run(tmp_path, drive, messages, name="run.mcap"):
    return load_run(record(tmp_path / name, small_rig(), messages, drive))


def test_identical_runs_pass(golden, drive, tmp_path):
    result = compare_runs(golden, _run(tmp_path, drive, simulated_outputs(drive)))
    assert result.passed and not result.findings
    g, r, matched = result.objects
    assert g == r == matched > 100 and result.mean_iou == pytest.approx(1.0)
    assert result.frames["detections"] == (40, 40, 40)
    text = format_diff(result)
    assert text.endswith("PASS: within tolerances") and "timing gates off" in text


def test_missing_objects_and_score_changes_are_reported_with_their_frames(golden, drive, tmp_path):
    run = _run(tmp_path, drive, simulated_outputs(drive, drop_ids=(4,), score_shift=0.08))
    result = compare_runs(golden, run)
    assert not result.passed
    counts = result.counts()
    cyclist_boxes = sum(1 for m in golden.detections for i in range(len(m.message.objects))
                        if m.message.objects.track_id[i] == 104)
    assert counts["missing object"] == cyclist_boxes > 0
    assert counts["changed object"] > 50
    assert any("104 missing objects" in f or f"{cyclist_boxes} missing objects" in f for f in result.failures)
    missing = next(f for f in result.findings if f.kind == "missing object")
    assert "cyclist #104" in missing.text and missing.t_ns in {m.t_ns for m in golden.detections}
    changed = next(f for f in result.findings if f.kind == "changed object")
    assert "score" in changed.text and "|d| 0.080 > 0.050" in changed.text
    text = format_diff(result, max_frames=3)
    assert "frame +0.000 s" in text and "more frames with findings" in text and "FAIL:" in text
    per_camera = {name: sum(1 for f in result.findings if f.subject == name)
                  for name in ("front cyclist #104", "front_left cyclist #104")}
    assert sum(per_camera.values()) == cyclist_boxes
    assert all(f"{name}: missing object in {n} frame sets" in text for name, n in per_camera.items() if n)
    # loosened tolerances accept the score shift but not the missing cyclist
    loose = CompareConfig.from_dict({"objects": {"score": 0.1}}, "test")
    result = compare_runs(golden, run, loose)
    assert result.counts()["changed object"] == 0 and result.counts()["missing object"] == cyclist_boxes
    allowed = CompareConfig.from_dict({"objects": {"score": 0.1, "max_missing_objects": cyclist_boxes}}, "test")
    assert compare_runs(golden, run, allowed).passed


def test_box_range_and_extra_objects(golden, drive, tmp_path):
    messages = copy.deepcopy(simulated_outputs(drive))
    target = next(m for m in messages if isinstance(m, DetectionsMessage) and len(m.objects) > 3)
    boxes = target.objects.box
    big = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))
    boxes[big] += np.float32(3.0)
    target.objects.range_m[big - 1] *= np.float32(1.5)
    moved = next(m for m in messages if isinstance(m, DetectionsMessage) and m.frame_ns > target.frame_ns)
    moved.objects.box[0] = (0, 0, 10, 10)   # no golden box there: one missing, one extra
    result = compare_runs(golden, _run(tmp_path, drive, messages))
    texts = [f.text for f in result.findings if f.t_ns == target.frame_ns]
    assert any("box (" in t and "|d| 3.0 > 2.0" in t for t in texts)
    assert any("range" in t for t in texts)
    kinds = [f.kind for f in result.findings if f.t_ns == moved.frame_ns]
    assert kinds.count("missing object") == 1 and kinds.count("extra object") == 1


def test_renumbered_tracks_pass_but_a_changed_track_does_not(golden, drive, tmp_path):
    messages = copy.deepcopy(simulated_outputs(drive))
    for m in messages:
        if isinstance(m, DetectionsMessage):
            m.objects.track_id += 5000
        elif isinstance(m, HintsMessage) and m.lead is not None:
            m.lead = type(m.lead)(m.lead.track_id + 5000, m.lead.gap_m, m.lead.rel_speed_mps, m.lead.ttc_s)
    assert compare_runs(golden, _run(tmp_path, drive, messages, "renumbered.mcap")).passed
    later = [m for m in messages if isinstance(m, DetectionsMessage)][30:]
    for m in later:
        m.objects.track_id[m.objects.track_id == 5101] = 7777   # the lead car gets a new track id mid-run
    result = compare_runs(golden, _run(tmp_path, drive, messages, "switched.mcap"))
    assert result.counts()["id change"] == 1 and not result.passed
    assert "#101 was run track #5101, now #7777" in next(f.text for f in result.findings if f.kind == "id change")
    hints = [f for f in result.findings if f.kind == "hints"]
    assert hints and all("lead is another object" in f.text for f in hints)


def test_hint_changes(golden, drive, tmp_path):
    result = compare_runs(golden, _run(tmp_path, drive, simulated_outputs(drive, lag_frames=3)))
    hints = [f for f in result.findings if f.kind == "hints"]
    assert hints and any("brake none -> " not in f.text and "brake prepare -> none" in f.text for f in hints)
    assert any("frame sets with changed hints" in f for f in result.failures)
    assert result.counts()["changed object"] == 0


def test_missing_frames(golden, drive, tmp_path):
    messages = simulated_outputs(drive)
    last = [m for m in messages if isinstance(m, DetectionsMessage)][-1].frame_ns
    result = compare_runs(golden, _run(tmp_path, drive, [m for m in messages if getattr(m, "frame_ns", 0) != last]))
    assert result.counts()["missing frame"] == 2   # detections and hints
    assert result.frames["detections"] == (40, 39, 39) and not result.passed
    assert next(f for f in result.findings if f.kind == "missing frame").t_ns == last
    allowed = CompareConfig.from_dict({"frames": {"max_missing_frames": 2}}, "test")
    assert compare_runs(golden, _run(tmp_path, drive, [m for m in messages if getattr(m, "frame_ns", 0) != last],
                                     "again.mcap"), allowed).passed


def test_timing_gates(golden, drive, tmp_path):
    slow = _run(tmp_path, drive, simulated_outputs(drive, engine_ms=12.0))
    result = compare_runs(golden, slow)
    assert result.passed and result.timing[1].mean_ms > 1.3 * result.timing[0].mean_ms
    assert "ratio mean 1.5" in format_diff(result)
    gates = CompareConfig(timing=TimingGates(enabled=True))
    result = compare_runs(golden, slow, gates)
    assert not result.passed and any("mean engine time" in f and "allowed 1.2x" in f for f in result.failures)
    absolute = CompareConfig(timing=TimingGates(enabled=True, max_mean_ratio=0, max_max_ratio=0, max_max_ms=10.0))
    assert compare_runs(golden, golden, absolute).passed
    assert any("max engine time" in f and "> 10 ms" in f for f in compare_runs(golden, slow, absolute).failures)


def test_tolerance_file_validation(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("objects:\n  score: 0.2\n  min_iou: 0.3\ntiming:\n  enabled: true\n  max_mean_ms: 40\n")
    config = CompareConfig.load(path)
    assert config.objects.score == 0.2 and config.objects.min_iou == 0.3 and config.timing.max_mean_ms == 40.0
    assert config.hints == CompareConfig().hints
    for text, expected in [("objects:\n  scor: 0.2\n", "objects.scor: unknown key"),
                           ("objects:\n  score: -1\n", "objects.score: must be >= 0.0"),
                           ("timing:\n  enabled: yes please\n", "timing.enabled: must be true or false"),
                           ("speed: 3\n", "unknown section 'speed'"),
                           ("objects: [1, 2]\n", "must be a mapping"),
                           ("objects: {score: \n", "not valid YAML")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(").replace("[", r"\[")):
            CompareConfig.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        CompareConfig.load(tmp_path / "absent.yaml")


def test_update_golden_replaces_the_file(golden, drive, tmp_path):
    target = tmp_path / "golden.mcap"
    target.write_bytes(golden.path.read_bytes())
    run = record(tmp_path / "run.mcap", small_rig(), simulated_outputs(drive, score_shift=0.2), drive)
    assert not compare_runs(target, run).passed
    update_golden(target, run)
    assert target.read_bytes() == run.read_bytes() and compare_runs(target, run).passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.mcap", "run.mcap"]


def test_determinism_check(drive, tmp_path):
    rig = small_rig()
    messages = simulated_outputs(drive)
    a = record(tmp_path / "a.mcap", rig, messages, drive)
    b = tmp_path / "b.mcap"
    from perception.io.record import RunRecorder

    clock = iter(range(10**9, 2 * 10**9, 1234567))
    with RunRecorder(b, rig, drive_path=drive, clock=lambda: next(clock)) as recorder:
        for m in copy.deepcopy(messages):
            if isinstance(m, DetectionsMessage):
                m.diag.stage_ns["engine"] += 999   # wall-time fields may differ
            recorder.write(m)
    assert a.read_bytes() != b.read_bytes()
    assert_runs_identical(a, b)
    changed = copy.deepcopy(messages)
    detections = [m for m in changed if isinstance(m, DetectionsMessage)]
    detections[7].objects.range_m[0] = np.nextafter(detections[7].objects.range_m[0], np.float32(np.inf))
    hints = [m for m in changed if isinstance(m, HintsMessage)]
    hints[3].confidence = -0.0 if hints[3].confidence == 0.0 else hints[3].confidence
    c = record(tmp_path / "c.mcap", rig, changed, drive)
    with pytest.raises(AssertionError, match=r"detections\[7\] \(t_ns 1700000000700000000\): "
                                             r"detections\.objects\.range_m: float32"):
        assert_runs_identical(a, c)
    assert run_differences(a, c, ignore=frozenset({"objects.range_m", "publish_ns", "diag.stage_ns"})) == []
    shorter = record(tmp_path / "d.mcap", rig, messages[:-3], drive)
    assert any("40 messages in a.mcap, 39 in d.mcap" in d for d in run_differences(a, shorter))
    assert T0 == detections[0].frame_ns


def test_identical_runs_with_an_inverted_box_compare_equal(drive, tmp_path):
    """Identical objects match by track id first, and identical boxes match even when degenerate (issue 12:
    an inverted box has IoU 0 with itself). A run file cannot carry such a box (the detections decoder
    rejects it), so it is put into the two loaded runs."""
    runs = [_run(tmp_path, drive, simulated_outputs(drive), name) for name in ("golden.mcap", "run.mcap")]
    for run in runs:
        target = next(m.message for m in run.detections if len(m.message.objects) > 1)
        target.objects = WireObjects(**{name: np.array(getattr(target.objects, name)) for name in OBJECT_FIELDS})
        box = target.objects.box
        box[0] = (box[0][2], box[0][1], box[0][0] - 7, box[0][3])  # x0 > x1
    result = compare_runs(*runs)
    assert result.passed and not result.findings, format_diff(result)
    g, r, matched = result.objects
    assert g == r == matched
