"""`perception replay` from the command line: run (real node), compare (exit codes, diff, --update-golden),
report; and replaying many drives in parallel processes."""

from __future__ import annotations

import json

import pytest

from perception.cli import main
from perception.io.run_file import load_run
from replay.runner_pool import replay_drives, run_paths
from tests.test_replay_support import record, simulated_outputs, simulated_replay, small_rig, write_drive


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    return write_drive(tmp_path_factory.mktemp("drive") / "drive.mcap", frames=20)


def test_compare_exit_codes_diff_and_update_golden(drive, tmp_path, capsys):
    golden = record(tmp_path / "golden.mcap", small_rig(), simulated_outputs(drive), drive)
    same = record(tmp_path / "same.mcap", small_rig(), simulated_outputs(drive), drive)
    assert main(["replay", "compare", str(golden), str(same)]) == 0
    assert "PASS: within tolerances" in capsys.readouterr().out
    worse = record(tmp_path / "worse.mcap", small_rig(), simulated_outputs(drive, drop_ids=(2,)), drive)
    assert main(["replay", "compare", str(golden), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "missing object: front truck #102" in out and "FAIL: " in out and "frame +0.000 s" in out
    tolerances = tmp_path / "loose.yaml"
    tolerances.write_text("objects:\n  max_missing_objects: 1000\n")
    assert main(["replay", "compare", str(golden), str(worse), "--tolerances", str(tolerances)]) == 0
    capsys.readouterr()
    assert main(["replay", "compare", str(golden), str(worse), "--update-golden"]) == 0
    out = capsys.readouterr().out
    assert "FAIL: " in out and f"golden updated: {golden}" in out   # the diff first, then the update
    assert golden.read_bytes() == worse.read_bytes()
    tolerances.write_text("objects:\n  max_missing: 3\n")
    assert main(["replay", "compare", str(golden), str(worse), "--tolerances", str(tolerances)]) == 2
    assert "objects.max_missing: unknown key" in capsys.readouterr().err


def test_report_command(drive, tmp_path, capsys):
    run = record(tmp_path / "run.mcap", small_rig(), simulated_outputs(drive), drive)
    assert main(["replay", "report", str(run), "--out", str(tmp_path / "r.html"), "--video",
                 str(tmp_path / "r.mp4")]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'r.html'}" in out and "(20 frames)" in out
    assert (tmp_path / "r.html").stat().st_size > 50_000 and (tmp_path / "r.mp4").stat().st_size > 10_000
    assert main(["replay", "report", str(tmp_path / "absent.mcap"), "--out", str(tmp_path / "x.html")]) == 2
    assert "cannot open" in capsys.readouterr().err


def test_many_drives_in_parallel_processes(drive, tmp_path):
    other = write_drive(tmp_path / "other.mcap", frames=40)
    broken = tmp_path / "broken.mcap"
    broken.write_bytes(b"not a drive")
    out = tmp_path / "runs"
    summary = replay_drives([drive, other, broken], out, None, jobs=2, replay=simulated_replay, progress=False)
    assert [r.ok for r in summary.results] == [True, True, False]
    assert "not an MCAP file" in summary.results[2].error
    assert [r.frame_sets for r in summary.results[:2]] == [20, 40]
    assert [r.brake_frames for r in summary.results[:2]] == [0, 10]   # brake needed from 2.9 s, hinted one frame set later
    assert summary.results[0].engine_mean_ms == pytest.approx(8.4, abs=0.5)
    assert len(load_run(out / "drive.run.mcap").detections) == 20
    assert json.loads((out / "summary.json").read_text())[1]["run"] == str(out / "other.run.mcap")
    table = summary.table()
    assert "2 of 3 drives replayed, 1 failed" in table and f"{broken}: {summary.results[2].error}" in table
    single = replay_drives([drive], tmp_path / "one.mcap", {"score_shift": 0.1}, jobs=1, replay=simulated_replay,
                           progress=False)   # the config reaches the replay function
    assert single.ok and single.summary_path is None
    assert load_run(tmp_path / "one.mcap").detections[0].message.objects.score[0] > \
        load_run(out / "drive.run.mcap").detections[0].message.objects.score[0]


def test_run_paths():
    assert [p.name for p in run_paths(["a/x.mcap", "b/y.mcap"], "out")] == ["x.run.mcap", "y.run.mcap"]
    with pytest.raises(Exception, match="drives share the name 'x'"):
        run_paths(["a/x.mcap", "b/x.mcap"], "out")


def test_run_command_replays_through_the_real_node(tmp_path, capsys):
    """`perception replay DRIVE --out RUN --config NODE.yaml` (the bare form of `run`), with the real node and
    the tiny test model, then compares the run with itself and reports it."""
    pytest.importorskip("torch")
    from tests.test_model import exported_tiny, tiny_drive

    drive = tiny_drive()
    config = tmp_path / "node.yaml"
    config.write_text(f"model: {exported_tiny()[1]}\nengine:\n  threads: 1\n")
    run = tmp_path / "run.mcap"
    assert main(["replay", str(drive), "--out", str(run), "--config", str(config), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 drives replayed" in out
    recorded = load_run(run)
    assert len(recorded.detections) > 10 and recorded.drive_path.resolve() == drive.resolve()
    assert main(["replay", "compare", str(run), str(run)]) == 0
    assert main(["replay", "report", str(run), "--out", str(tmp_path / "report.html")]) == 0
