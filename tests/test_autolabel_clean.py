"""Temporal cleaning and corrections on hand-made detections (the pure cores of perception/autolabel)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from perception.autolabel.clean import CORRECTED, INTERPOLATED, TEACHER, CleaningConfig, clean
from perception.autolabel.corrections import apply_corrections, load_corrections, parse_corrections
from perception.detections import Detections
from perception.errors import ConfigError
from perception.labels import CLASS_INDEX

CAR, TRUCK, PED = CLASS_INDEX["car"], CLASS_INDEX["truck"], CLASS_INDEX["pedestrian"]
SIZE = (640, 360)
T = [k * 50_000_000 for k in range(20)]  # 20 Hz


def dets(rows: list[tuple[int, float, tuple[float, float, float, float]]]) -> Detections:
    n = len(rows)
    return Detections(np.zeros(n, np.int32), np.array([r[0] for r in rows], np.int32),
                      np.array([r[1] for r in rows], np.float32), np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
                      np.full(n, np.nan, np.float32), np.full((n, 2), np.nan, np.float32))


def true_box(k: int) -> np.ndarray:
    return np.array([100.0 + 4 * k, 150.0, 160.0 + 4 * k, 200.0])


def scene(noise: float = 2.0) -> list[Detections]:
    """A car moving right (noisy boxes, missed in frames 6-7, called truck in frames 3 and 12 with a car
    duplicate beside it in frame 12), plus a one-frame pedestrian ghost in frame 9."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(len(T)):
        rows = []
        if k not in (6, 7):
            box = tuple(true_box(k) + rng.normal(0, noise, 4))
            rows.append((TRUCK if k in (3, 12) else CAR, 0.8, box))
            if k == 12:
                rows.append((CAR, 0.6, tuple(np.asarray(box) + 1.0)))
        if k == 9:
            rows.append((PED, 0.9, (400.0, 100.0, 420.0, 160.0)))
        frames.append(dets(rows))
    return frames


def test_cleaning_drops_ghosts_fills_gaps_votes_the_class_and_smooths() -> None:
    frames = scene()
    (track,) = clean(T, frames, CleaningConfig(max_gap=2, class_agnostic=True), SIZE)
    assert track.cls == CAR
    np.testing.assert_array_equal(track.frame, np.arange(20))
    assert track.origin[6] == track.origin[7] == INTERPOLATED and (np.delete(track.origin, [6, 7]) == TEACHER).all()
    raw_error = np.mean([np.abs(frames[k].box[0] - true_box(k)).mean() for k in range(20) if k not in (6, 7)])
    clean_error = np.mean([np.abs(track.box[k] - true_box(k)).mean() for k in range(20) if k not in (6, 7)])
    assert clean_error < 0.7 * raw_error
    assert np.abs(track.box[6] - true_box(6)).max() < 6.0


def test_class_strict_association_splits_a_flickering_track() -> None:
    tracks = clean(T, scene(), CleaningConfig(max_gap=2, class_agnostic=False, min_frames=1), SIZE)
    assert {tr.cls for tr in tracks} == {CAR, TRUCK, PED}


def test_gaps_longer_than_max_gap_split_the_track_and_short_tracks_go() -> None:
    tracks = clean(T, scene(), CleaningConfig(max_gap=1, min_frames=3, class_agnostic=True), SIZE)
    assert [(int(tr.frame[0]), int(tr.frame[-1])) for tr in tracks] == [(0, 5), (8, 19)]
    assert clean(T, scene(), CleaningConfig(max_gap=1, min_frames=7, class_agnostic=True), SIZE)[0].frame[0] == 8
    assert clean(T, scene(), CleaningConfig(min_track_score=0.9), SIZE) == []


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="smooth_frames: must be odd"):
        CleaningConfig(smooth_frames=4)
    with pytest.raises(ConfigError, match="cleaning.yaml.max_gapp: unknown key"):
        CleaningConfig.from_dict({"max_gapp": 3}, "cleaning.yaml")


@dataclass
class Labels:  # what apply_corrections needs of pipeline.CameraLabels
    camera: str
    image_size: tuple[int, int]
    t_ns: np.ndarray
    tracks: list


def labelled() -> Labels:
    return Labels("front", SIZE, np.asarray(T, np.int64),
                  clean(T, scene(), CleaningConfig(max_gap=2, class_agnostic=True), SIZE))


def test_corrections_delete_relabel_and_rebox() -> None:
    labels = labelled()
    track = labels.tracks[0].id
    apply_corrections([labels], parse_corrections({"teacher": "t", "corrections": [
        {"track": track, "action": "delete", "start_ns": T[0], "end_ns": T[2]},
        {"track": track, "action": "relabel", "cls": "truck"},
        {"track": track, "action": "rebox", "start_ns": T[10], "end_ns": T[12], "box": [10, 20, 30, 40],
         "box_end": [14, 20, 34, 44]},
    ]}, "corr.yaml"), "t")
    (tr,) = labels.tracks
    assert tr.cls == TRUCK and tr.frame[0] == 3 and (tr.origin == CORRECTED).all()
    np.testing.assert_allclose(tr.box[tr.frame == 11][0], [12, 20, 32, 42])
    apply_corrections([labels], parse_corrections({"corrections": [{"track": track, "action": "delete"}]}, "c"), "t")
    assert labels.tracks == []


@pytest.mark.parametrize("doc, message", [
    ([], "must be a mapping"),
    ({"corrections": [{"track": 1, "action": "erase"}]}, "corrections\\[0\\]: field 'action': 'erase' is not one of"),
    ({"corrections": [{"track": 1, "action": "relabel", "cls": "bus"}]}, "'bus' is not one of car"),
    ({"corrections": [{"track": 1, "action": "relabel", "cls": "car", "start_ns": 0}]}, "'start_ns' does not apply to relabel"),
    ({"corrections": [{"track": 1, "action": "rebox", "box": [5, 5, 1, 1]}]}, "needs x1 > x0"),
    ({"corrections": [{"track": 1, "action": "rebox"}]}, "field 'box' is missing"),
    ({"corrections": [{"track": "one", "action": "delete"}]}, "field 'track': expected an integer"),
    ({"corrections": [{"track": 1, "action": "delete", "start_ns": 9, "end_ns": 3}]}, "end_ns \\(3\\) is before"),
    ({"corrections": [{"action": "delete"}] * 10_001}, "more than the limit"),
])
def test_bad_corrections_are_named(doc, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_corrections(doc, "corr.yaml")


def test_corrections_that_do_not_fit_the_labels_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="camera 'front' has no track 99"):
        apply_corrections([labelled()], parse_corrections({"corrections": [{"track": 99, "action": "delete"}]}, "c"), "t")
    with pytest.raises(ConfigError, match="written for teacher 'other'"):
        apply_corrections([labelled()], parse_corrections({"teacher": "other", "corrections": []}, "c"), "t")
    with pytest.raises(ConfigError, match="field 'camera' is needed"):
        apply_corrections([labelled(), labelled()], parse_corrections(
            {"corrections": [{"track": 1, "action": "delete"}]}, "c"), "t")
    path = tmp_path / "corr.yaml"
    path.write_text("corrections: &a [*a]\n")
    with pytest.raises(ConfigError, match="corr.yaml: not valid YAML: anchors and aliases"):
        load_corrections(path)
    path.write_text("#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_corrections(path)


def test_label_set_scores_follow_the_protocol() -> None:
    from perception.autolabel.evaluate import _scores
    from perception.eval import MODERATE, ScoredFrame

    gt = np.array([[10, 10, 110, 90], [200, 50, 260, 170]], np.float64)
    cls = np.array([CAR, PED])

    def frame(box, det_cls, score):
        return ScoredFrame.build(box, det_cls, score, gt, cls, [0, 0], [0, 0], 640.0, MODERATE)

    perfect = _scores([frame(gt, cls, [0.9, 0.8])] * 3)
    assert perfect.precision == perfect.recall == 1.0 and perfect.ap50["car"] == perfect.ap50["pedestrian"] == 1.0
    # one right car, one ghost car, the pedestrian missed; a tiny unmatched box is ignored (below the level)
    mixed = _scores([frame([gt[0], [300, 200, 400, 300], [500, 10, 504, 14]], [CAR, CAR, CAR], [0.9, 0.5, 0.4])])
    assert (mixed.precision, mixed.recall, mixed.labels_per_frame) == (0.5, 0.5, 3.0)
    assert mixed.ap50["car"] == pytest.approx(1.0) and mixed.ap50["pedestrian"] == 0.0
