"""perception autolabel end to end: a real teacher (the bundled temporal model on ONNX Runtime) on a synthetic
drive and on real dashcam video, real MCAP output read back by the drive reader and the trainer's loader."""

from __future__ import annotations

from pathlib import Path

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
