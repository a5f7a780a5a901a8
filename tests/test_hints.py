"""Control hints: on the tracker's output for simulated scenes, and on hand-made object lists."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from perception.errors import ConfigError
from perception.hints import BrakeStage, HintGenerator, HintsConfig, speed_cap
from perception.track import MultiCameraTracker, TrackedObjects
from tests.test_track_scene import PERIOD_NS, Scene, braking, car, cruise, front_rig

EGO_FRONT = 3.7
CAR_HALF_LENGTH = 2.25


def objects(t_ns: int, rows: list[dict], camera_age_s: float = 0.0) -> TrackedObjects:
    """Tracked cars from rows of {id, x, y, vx, vy, closing_std, age, confidence}; gap and TTC as the tracker
    computes them for objects straight ahead."""
    n = len(rows)
    get = lambda key, default: np.array([r.get(key, default) for r in rows], np.float64)  # noqa: E731
    x, y, vx, vy = get("x", 0.0), get("y", 0.0), get("vx", 0.0), get("vy", 0.0)
    gap = np.hypot(x - EGO_FRONT, y) - CAR_HALF_LENGTH
    closing = -vx
    with np.errstate(divide="ignore"):
        ttc = np.where((closing > 0) & (x > EGO_FRONT), gap / np.where(closing > 0, closing, 1.0), np.inf)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return TrackedObjects(
        t_ns=t_ns, ego_front_m=EGO_FRONT,
        global_id=np.array([r.get("id", k + 1) for k, r in enumerate(rows)], np.int64),
        camera_track_id=np.zeros((n, 1), np.int64), cls=np.zeros(n, np.int32), score=f32(np.full(n, 0.9)),
        camera=np.zeros(n, np.int32), box=f32(np.zeros((n, 4))),
        position=f32(np.stack([x, y, np.zeros(n)], 1).reshape(n, 3)),
        velocity=f32(np.stack([vx, vy, np.zeros(n)], 1).reshape(n, 3)), acceleration=f32(np.zeros((n, 3))),
        position_std=f32(np.full((n, 2), 0.2)), velocity_std=f32(np.full((n, 2), 0.5)),
        footprint_m=f32(np.tile([4.5, 1.8], (n, 1))), range_m=f32(np.hypot(x, y)),
        range_source=np.full(n, 3, np.uint8), gap_m=f32(gap), closing_speed_mps=f32(closing),
        closing_speed_std_mps=f32(get("closing_std", 0.0)), ttc_s=f32(ttc), age_s=f32(get("age", 5.0)),
        hits=np.full(n, 100, np.int32), coasting=np.zeros(n, bool), confidence=f32(get("confidence", 0.9)),
        camera_age_s=f32([camera_age_s]), camera_sees_ahead=np.array([True]),
    )


def lead_at(t_s: float, gap: float, closing: float, **extra) -> TrackedObjects:
    return objects(int(round(t_s * 1e9)), [dict(x=EGO_FRONT + gap + CAR_HALF_LENGTH, vx=-closing, **extra)])


# ---- on the tracker's output -------------------------------------------------------------------------------------
def run_hints(scene: Scene, n: int):
    tracker, hints = MultiCameraTracker(scene.cameras), HintGenerator()
    for frame, t_ns, camera_t, dets in scene.frame_sets(n):
        out = tracker.update(t_ns, camera_t, dets)
        yield frame, out, hints.update(out)


def true_ttc(scene: Scene, t_ns: int, object_id: int = 1) -> float:
    (x, _), (vx, _) = scene.truth(t_ns)[object_id]
    return (x - CAR_HALF_LENGTH - EGO_FRONT) / -vx if vx < 0 else np.inf


@pytest.mark.parametrize("gap, decel", [(25.0, 6.0), (35.0, 4.0)])
def test_braking_lead_gives_prepare_then_brake_before_the_true_ttc_crosses_the_threshold(gap, decel):
    """Lead at the ego's speed brakes at t = 1.5 s; the hints use the default configuration."""
    cfg = HintsConfig()
    scene = Scene(front_rig(1), [car(1, braking(EGO_FRONT + gap + CAR_HALF_LENGTH, 0.0, 1.5, decel))], seed=11)
    first: dict[BrakeStage, int] = {}
    true_brake_frame = None
    for frame, out, hints in run_hints(scene, 120):
        first.setdefault(hints.brake, frame)
        if true_brake_frame is None and true_ttc(scene, out.t_ns) < cfg.brake_ttc_on_s:
            true_brake_frame = frame
        if hints.lead is not None:
            assert hints.lead.global_id == out.global_id[0]
    assert true_brake_frame is not None
    assert 30 < first[BrakeStage.PREPARE] < first[BrakeStage.BRAKE] < true_brake_frame  # no alarm before braking


def test_cut_in_is_flagged_for_a_lateral_mover_and_not_for_a_parallel_car():
    def cutting_in(t: float) -> tuple[np.ndarray, np.ndarray]:  # in the left lane, then 1.2 m/s to the right
        vy = -1.2 if t >= 1.0 else 0.0
        return np.array([28.0, 3.5 + vy * (t - 1.0)]), np.array([0.0, vy])

    scene = Scene(front_rig(1), [car(1, cutting_in), car(2, cruise(20.0, -3.5, 0.3, 0.0))], seed=4)
    flagged_frames = {1: [], 2: []}
    for frame, out, hints in run_hints(scene, 80):
        truth_of = {int(g): (1 if abs(out.position[k, 1] - scene.truth(out.t_ns)[1][0][1]) < 1.0 else 2)
                    for k, g in enumerate(out.global_id)}
        for global_id in hints.cut_in_ids:
            flagged_frames[truth_of[global_id]].append(frame)
    assert flagged_frames[2] == []
    enters_corridor = next(f for f in range(80)
                           if scene.truth(f * PERIOD_NS)[1][0][1] - 0.9 < HintsConfig().corridor_half_width_m)
    assert flagged_frames[1] and 20 < flagged_frames[1][0] < enters_corridor


# ---- brake stage, hysteresis --------------------------------------------------------------------------------------
def test_hysteresis_prevents_flicker_of_a_noisy_ttc_around_the_threshold():
    rng = np.random.default_rng(0)
    cfg = HintsConfig()
    no_hysteresis = dataclasses.replace(cfg, brake_ttc_off_s=cfg.brake_ttc_on_s + 1e-6,
                                        prepare_ttc_off_s=cfg.prepare_ttc_on_s + 1e-6, min_hold_s=0.0)
    gap = 20.0
    releases = {}
    for name, config in (("ours", cfg), ("naive", no_hysteresis)):
        generator, stages = HintGenerator(config), []
        for k in range(100):  # TTC = 2.0 s +- 0.25 s at 20 Hz for 5 s
            ttc = cfg.brake_ttc_on_s + rng.normal(0.0, 0.25)
            stages.append(generator.update(lead_at(k * 0.05, gap, gap / ttc)).brake)
        assert stages.count(BrakeStage.BRAKE) > 40
        releases[name] = sum(b < a for a, b in zip(stages, stages[1:]))
    assert releases["naive"] > 20
    assert releases["ours"] <= 1


def test_brake_releases_after_the_lead_pulls_away_and_not_before_the_hold_time():
    cfg = HintsConfig()
    generator = HintGenerator(cfg)
    t = 0.0
    for _ in range(5):  # closing fast: brake
        hints = generator.update(lead_at(t, 15.0, 10.0))
        t += 0.05
    assert hints.brake == BrakeStage.BRAKE
    entered = 0.0
    stages = []
    for k in range(40):  # the lead pulls away: opening at 3 m/s
        stages.append((t, generator.update(lead_at(t, 15.0 + 3.0 * k * 0.05, -3.0)).brake))
        t += 0.05
    assert all(stage == BrakeStage.BRAKE for time, stage in stages if time < entered + cfg.min_hold_s - 1e-9)
    assert stages[-1][1] == BrakeStage.NONE
    released = next(time for time, stage in stages if stage == BrakeStage.NONE)
    assert released <= entered + cfg.min_hold_s + 0.05 + 1e-9


def test_stages_escalate_immediately_and_gap_thresholds_act_without_ttc():
    cfg = HintsConfig()
    generator = HintGenerator(cfg)
    assert generator.update(lead_at(0.0, 30.0, 0.0)).brake == BrakeStage.NONE
    assert generator.update(lead_at(0.05, cfg.prepare_gap_on_m - 0.5, 0.0)).brake == BrakeStage.PREPARE
    assert generator.update(lead_at(0.10, cfg.brake_gap_on_m - 0.5, 0.0)).brake == BrakeStage.BRAKE


def test_a_young_track_does_not_trigger_on_its_settling_closing_speed():
    generator = HintGenerator()
    young = generator.update(lead_at(0.0, 20.0, 15.0, age=0.2))
    assert young.brake == BrakeStage.NONE and young.lead.ttc_s == pytest.approx(20.0 / 15.0, rel=1e-5)
    assert generator.update(lead_at(0.05, 20.0, 15.0, age=1.0)).brake == BrakeStage.BRAKE


def test_the_ttc_margin_uses_the_closing_speed_uncertainty():
    cfg = HintsConfig()
    sure = HintGenerator(cfg).update(lead_at(0.0, 20.0, 4.0, closing_std=0.0))
    unsure = HintGenerator(cfg).update(lead_at(0.0, 20.0, 4.0, closing_std=2.0))
    assert sure.lead.brake_ttc_s == pytest.approx(5.0) and sure.brake == BrakeStage.NONE
    assert unsure.lead.brake_ttc_s == pytest.approx(20.0 / (4.0 + cfg.ttc_margin_sigma * 2.0))
    assert unsure.brake == BrakeStage.PREPARE


# ---- lead, speed cap, confidence -----------------------------------------------------------------------------------
def test_lead_is_the_nearest_confident_object_ahead_in_the_corridor():
    objs = objects(0, [
        dict(id=1, x=40.0, y=0.5),               # in the corridor
        dict(id=2, x=25.0, y=-1.0, vx=-2.0),     # nearer, in the corridor: the lead
        dict(id=3, x=12.0, y=3.5),               # nearer still but in the next lane
        dict(id=4, x=-8.0, y=0.0),               # behind
        dict(id=5, x=15.0, y=0.0, confidence=0.1),  # too unsure
    ])
    hints = HintGenerator().update(objs)
    lead = hints.lead
    assert lead.global_id == 2 and lead.relative_speed_mps == pytest.approx(-2.0)
    assert lead.gap_m == pytest.approx(np.hypot(25.0 - EGO_FRONT, 1.0) - CAR_HALF_LENGTH, rel=1e-5)
    assert lead.range_m == pytest.approx(np.hypot(25.0, 1.0), rel=1e-5)
    assert lead.ttc_s == pytest.approx(lead.gap_m / 2.0, rel=1e-5)
    assert hints.free_distance_m == pytest.approx(lead.gap_m)
    assert hints.speed_cap_mps == pytest.approx(speed_cap(lead.gap_m, HintsConfig()))
    assert hints.confidence == pytest.approx(0.9)


def test_speed_cap_is_monotonic_in_the_free_distance():
    cfg = HintsConfig()
    distances = np.linspace(0.0, 200.0, 801)
    caps = np.array([speed_cap(d, cfg) for d in distances])
    assert np.all(np.diff(caps) >= 0) and np.all(np.diff(caps[distances > cfg.standstill_gap_m]) > 0)
    assert caps[distances <= cfg.standstill_gap_m].max() == 0.0
    assert speed_cap(54.0, cfg) == pytest.approx(np.sqrt(2 * cfg.comfort_decel_mps2 * 50.0))
    empty = HintGenerator(cfg).update(objects(0, []))
    assert empty.lead is None and empty.free_distance_m == cfg.max_free_distance_m
    assert empty.speed_cap_mps == pytest.approx(speed_cap(cfg.max_free_distance_m, cfg))


def test_without_a_lead_the_confidence_follows_the_forward_cameras_freshness():
    assert HintGenerator().update(objects(0, [], camera_age_s=0.0)).confidence == pytest.approx(1.0)
    assert HintGenerator().update(objects(0, [], camera_age_s=1.0)).confidence < 0.05


# ---- configuration -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"brake_ttc_off_s": 1.5}, "node.yaml: hints.brake_ttc_off_s: must be > brake_ttc_on_s (2.0) for hysteresis"),
    ({"prepare_gap_off_m": 7.0}, "node.yaml: hints.prepare_gap_off_m: must be > prepare_gap_on_m (8.0)"),
    ({"brake_ttc_on_s": 4.5, "brake_ttc_off_s": 6.0}, "node.yaml: hints.brake_ttc_on_s: must be < prepare_ttc_on_s"),
    ({"comfort_decel_mps2": 0}, "node.yaml: hints.comfort_decel_mps2: must be > 0.0 m/s^2"),
    ({"min_hold_s": -1}, "node.yaml: hints.min_hold_s: must be >= 0.0 s"),
    ({"standstill_gap_m": 500}, "node.yaml: hints.standstill_gap_m: must be < max_free_distance_m"),
    ({"brake_ttc": 2.0}, "node.yaml: hints.brake_ttc: unknown key"),
])
def test_hints_config_errors_name_the_key(settings, message):
    with pytest.raises(ConfigError) as error:
        HintsConfig.from_dict(settings, "node.yaml: hints")
    assert str(error.value).startswith(message)


def test_every_hint_setting_is_documented():
    assert all(doc and unit is not None for _, _, unit, doc in HintsConfig.describe())
