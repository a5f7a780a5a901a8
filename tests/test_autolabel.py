"""perception autolabel end to end: a real teacher (the bundled temporal model on ONNX Runtime) on a synthetic
drive and on real dashcam video, real MCAP output read back by the drive reader and the trainer's loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perception.autolabel.pipeline import LabelOptions, label_recording
from perception.cli import main
from perception.io.drive import DriveReader
from perception.node.defaults import DEMO_MODEL

SYNTH = dict(seed=7, seconds=2.0, fps=15.0, num_cameras=1, scenario="mixed", width=640, height=360,
             image_format="jpeg", jpeg_quality=90)


@pytest.fixture(scope="module")
def synth_drive() -> Path:
    from replay.synth import cached_drive

    return cached_drive(**SYNTH)


def _labels(path: Path) -> list:
    with DriveReader(path) as reader:
        return list(reader.ground_truth())


def test_labels_a_synthetic_drive_into_a_drive_the_trainer_reads(synth_drive: Path, tmp_path: Path) -> None:
    from perception.model.config import ModelConfig
    from perception.model.dataset import load_sequences

    out = tmp_path / "labelled.mcap"
    result = label_recording(synth_drive, DEMO_MODEL, out, LabelOptions(every=2, threads=1))
    with DriveReader(synth_drive) as source:
        source_times = [cf.t_ns for cf in source.frames()][::2]
    with DriveReader(out) as labelled:
        frames = list(labelled.frames())
        labels = list(labelled.ground_truth())
        assert labelled.rig.names == ("front",)
    assert [f.t_ns for f in frames] == source_times == [g.t_ns for g in labels]
    boxes = [b for g in labels for b in g.boxes]
    assert boxes, "the demo model finds the synthetic cars"
    assert all(b.auto is not None and b.auto.teacher == result.teacher_id for b in boxes)
    assert {b.auto.origin for b in boxes} <= {"teacher", "interpolated"}
    assert all(g.objects == () and g.ego_speed is None for g in labels)
    (seq,) = load_sequences(out, ModelConfig(), cache_dir=tmp_path / "cache")
    assert len(seq) == len(source_times) and sum(len(o) for o in seq.objects) == len(boxes)


def test_same_input_same_labels(synth_drive: Path, tmp_path: Path) -> None:
    options = LabelOptions(start_s=0.5, end_s=1.5, threads=1)
    label_recording(synth_drive, DEMO_MODEL, tmp_path / "a.mcap", options)
    label_recording(synth_drive, DEMO_MODEL, tmp_path / "b.mcap", options)
    a, b = _labels(tmp_path / "a.mcap"), _labels(tmp_path / "b.mcap")
    assert len(a) == 15 and a == b


def test_cli_labels_real_dashcam_video(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = shared_data / "dashcam" / "solidWhiteRight.mp4"
    out = tmp_path / "swr.mcap"
    assert main(["autolabel", str(video), "--teacher", str(DEMO_MODEL), "--out", str(out), "--end", "1.2",
                 "--threads", "1"]) == 0
    assert "solidWhiteRight: 30 frames" in capsys.readouterr().out
    with DriveReader(out) as reader:
        camera = reader.rig["solidWhiteRight"]
        assert (camera.width, camera.height, camera.fx) == (960, 540, 960.0)  # the default uncalibrated camera
        assert len(list(reader.frames())) == 30 == len(list(reader.ground_truth()))


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["autolabel", str(tmp_path / "missing.mp4"), "--teacher", str(DEMO_MODEL),
                 "--out", str(tmp_path / "o.mcap")]) == 2
    assert "missing.mp4: no such video file" in capsys.readouterr().err
    assert main(["autolabel", str(tmp_path / "x.mp4"), "--teacher", str(DEMO_MODEL),
                 "--out", str(tmp_path / "nowhere" / "o.mcap")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["autolabel", str(tmp_path / "x.mp4"), "--teacher", str(DEMO_MODEL), "--out", "o.mcap",
                 "--every", "0"]) == 2
    assert "every must be >= 1" in capsys.readouterr().err


def _loop(inputs: list[str], teacher: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Label, review, write corrections against the review's track table, label again with them."""
    import re

    first, html, template = tmp_path / "first.mcap", tmp_path / "review.html", tmp_path / "template.yaml"
    assert main(["autolabel", *inputs, *teacher, "--out", str(first), "--threads", "1"]) == 0
    assert main(["autolabel", "review", str(first), "--out", str(html), "--frames", "8",
                 "--corrections-template", str(template)]) == 0
    page = html.read_text()
    assert page.count("data:image/jpeg;base64,") == 8
    labels = _labels(first)
    shown = [int(t) for t in re.findall(r"t_ns=(\d+)", page)]
    lowest = {g.t_ns: min([b.auto.score for b in g.boxes] or [np.inf]) for g in labels}
    assert [lowest[t] for t in shown] == sorted(lowest.values())[:8]  # least confident first
    tracks = sorted({(b.id, b.cls) for g in labels for b in g.boxes})
    assert len(tracks) >= 2, tracks
    template_text = template.read_text()
    assert all(f"track: {i}, action: delete" in template_text for i, _ in tracks)
    (gone, _), (kept, cls) = tracks[0], tracks[1]
    new_cls = "pedestrian" if cls != "pedestrian" else "car"
    span = [g.t_ns for g in labels if any(b.id == kept for b in g.boxes)]
    corrections = tmp_path / "corr.yaml"
    corrections.write_text(template_text.replace("corrections:\n", f"""corrections:
  - {{track: {gone}, action: delete}}
  - {{track: {kept}, action: relabel, cls: {new_cls}}}
  - {{track: {kept}, action: rebox, start_ns: {span[0]}, end_ns: {span[0]}, box: [10, 20, 110, 220]}}
"""))
    second = tmp_path / "second.mcap"
    assert main(["autolabel", *inputs, *teacher, "--out", str(second), "--threads", "1",
                 "--corrections", str(corrections)]) == 0
    capsys.readouterr()
    after = _labels(second)
    assert not any(b.id == gone for g in after for b in g.boxes)
    mine = [(g.t_ns, b) for g in after for b in g.boxes if b.id == kept]
    assert [t for t, _ in mine] == span and all(b.cls == new_cls and b.auto.origin == "corrected" for _, b in mine)
    assert mine[0][1].box == (10.0, 20.0, 110.0, 220.0)
    others = lambda gts: [(g.t_ns, b) for g in gts for b in g.boxes if b.id not in (gone, kept)]  # noqa: E731
    assert others(after) == others(labels)


def test_semi_automatic_loop_on_a_synthetic_drive(synth_drive: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    _loop([str(synth_drive)], ["--teacher", str(DEMO_MODEL)], tmp_path, capsys)


def test_semi_automatic_loop_on_real_video_with_yolox(shared_data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    teacher = ["--teacher", str(shared_data / "models" / "yolox_nano.onnx"),
               "--teacher-card", str(Path(__file__).resolve().parents[1] / "models" / "yolox_nano.card.yaml")]
    config = tmp_path / "cleaning.yaml"
    config.write_text("track_score: 0.3\nmin_track_score: 0.3\n")  # YOLOX-Nano scores distant cars ~0.3-0.5
    video = str(shared_data / "dashcam" / "solidWhiteRight.mp4")
    _loop([video, "--end", "1.6", "--config", str(config)], teacher, tmp_path, capsys)


def test_evaluate_reports_teacher_and_cleaned_figures(synth_drive: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["autolabel", "evaluate", str(synth_drive), "--teacher", str(DEMO_MODEL), "--threads", "1"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()]
    header, stages = rows[0], rows[2:]
    assert [r[2] for r in stages] == ["teacher", "cleaned"] and all(r[1] == "30" for r in stages)
    aps = [k for k, name in enumerate(header) if name.startswith("AP@0.5")]
    assert all(max(float(r[k]) for k in aps if r[k] != "-") > 0.3 for r in stages)  # it sees the synthetic world
    assert all(0.0 <= float(r[k]) <= 1.0 for r in stages for k in aps if r[k] != "-")


def test_several_inputs_go_into_a_folder(synth_drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import shutil

    inputs = [shutil.copy(synth_drive, tmp_path / name) for name in ("a.mcap", "b.mcap")]
    out = tmp_path / "labelled"
    assert main(["autolabel", *map(str, inputs), "--teacher", str(DEMO_MODEL), "--out", str(out),
                 "--end", "0.5", "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.mcap", "b.mcap"]
    assert _labels(out / "a.mcap") == _labels(out / "b.mcap") and len(_labels(out / "a.mcap")) == 8
    assert main(["autolabel", *map(str, inputs), "--teacher", str(DEMO_MODEL), "--out", str(out),
                 "--corrections", str(tmp_path / "c.yaml")]) == 2
    assert "--corrections belongs to one labelled recording" in capsys.readouterr().err
