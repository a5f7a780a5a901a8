"""Synthetic world: closed-form kinematics and the scenarios' scripted behaviour (no rendering)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from replay.synth.motion import LateralMove, Motion, SpeedChange, SpeedProfile
from replay.synth.scenarios import SCENARIOS
from replay.synth.world import (
    ACTOR_RANGE_M, CROSSWALK_WIDTH, EGO_FRONT, EGO_LENGTH, EGO_REAR_OVERHANG, EGO_WIDTH, LANES_SAME, LEFT_CURB,
    RIGHT_CURB, next_crosswalk,
)


def test_speed_profile_brakes_to_a_stop_and_holds():
    m = Motion((0.0, 0.0), 0.0, SpeedProfile(10.0, (SpeedChange(1.0, 5.0, 0.0), SpeedChange(5.0, 2.0, 4.0))))
    x, _, _, v, _, a = m.states(np.array([-0.5, 0.5, 2.0, 4.0, 6.0, 9.0])).T
    assert x == pytest.approx([-5.0, 5.0, 10.0 + 10.0 - 2.5, 20.0, 21.0, 20.0 + 4.0 + 2 * 4.0])
    # before t = 0 (a capture jittered early) it extrapolates; brakes, stops after 10 m, pulls away, cruises
    assert v == pytest.approx([10.0, 10.0, 5.0, 0.0, 2.0, 4.0])
    assert a == pytest.approx([0.0, 0.0, -5.0, 0.0, 2.0, 0.0])


def test_world_is_defined_slightly_before_t0():
    world = SCENARIOS["mixed"](np.random.default_rng(0), 2.0)
    early, start = world.snapshot(-0.03), world.snapshot(0.0)
    assert [a.spec.id for a in early.actors] == [a.spec.id for a in start.actors]
    assert all(math.isfinite(a.x) and a.x <= b.x + 1e-9 for a, b in zip(early.actors, start.actors) if b.vx >= 0)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_velocities_are_derivatives_of_positions(scenario):
    world = SCENARIOS[scenario](np.random.default_rng(5), 6.0)
    h = 1e-4
    for t in np.linspace(0.05, 5.9, 23):
        before, now, after = (world.snapshot(float(t) + d) for d in (-h, 0.0, h))
        assert (after.ego_x - before.ego_x) / (2 * h) == pytest.approx(now.ego_speed, abs=1e-3)
        b = {a.spec.id: np.array(before.vehicle_position(a)) for a in before.actors}
        f = {a.spec.id: np.array(after.vehicle_position(a)) for a in after.actors}
        for a in now.actors:
            if a.spec.id in b and a.spec.id in f:
                numeric = (f[a.spec.id] - b[a.spec.id]) / (2 * h)
                assert numeric == pytest.approx(now.relative_velocity(a), abs=2e-3), (scenario, a.spec.id, t)


def _obb_overlap(a: tuple, b: tuple) -> bool:
    """Separating-axis test of two oriented rectangles (x, y, yaw, length, width)."""
    def corners(x, y, yaw, length, width):
        c, s = math.cos(yaw), math.sin(yaw)
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
        return np.column_stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1]])

    pa, pb = corners(*a), corners(*b)
    for yaw in (a[2], a[2] + math.pi / 2, b[2], b[2] + math.pi / 2):
        axis = np.array([math.cos(yaw), math.sin(yaw)])
        if (pa @ axis).max() < (pb @ axis).min() or (pb @ axis).max() < (pa @ axis).min():
            return False
    return True


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_nothing_drives_through_anything(scenario):
    for seed in range(2):
        world = SCENARIOS[scenario](np.random.default_rng(seed), 8.0)
        for t in np.arange(0.0, 8.0, 0.05):
            snap = world.snapshot(float(t))
            boxes = [(snap.ego_x + EGO_LENGTH / 2 - EGO_REAR_OVERHANG, 0.0, 0.0, EGO_LENGTH, EGO_WIDTH)]
            boxes += [(a.x, a.y, a.yaw, a.spec.size[0], a.spec.size[1]) for a in snap.actors]
            b = np.array(boxes)
            radius = np.hypot(b[:, 3], b[:, 4]) / 2
            near = np.hypot(b[:, None, 0] - b[None, :, 0], b[:, None, 1] - b[None, :, 1]) < radius[:, None] + radius
            for i, j in zip(*np.nonzero(np.triu(near, 1))):
                assert not _obb_overlap(boxes[i], boxes[j]), (scenario, seed, t, i, j)


def test_snapshot_keeps_only_actors_in_range():
    world = SCENARIOS["mixed"](np.random.default_rng(0), 10.0)
    snap = world.snapshot(4.0)
    ids = {a.spec.id for a in snap.actors}
    for spec in world.actors:
        st = spec.motion.state(4.0)
        assert (spec.id in ids) == (math.hypot(st.x - snap.ego_x, st.y) <= ACTOR_RANGE_M)
    assert {"car", "truck", "pedestrian", "cyclist"} <= {a.spec.cls for a in snap.actors}


def test_lead_brake_lead_stops_hard_and_ego_stops_behind_it():
    for seed in range(5):
        world = SCENARIOS["lead_brake"](np.random.default_rng(seed), 8.0)
        lead = next(a for a in world.actors if a.id == 1)
        speeds = [lead.motion.state(t).vx for t in np.arange(0.0, 8.0, 0.1)]
        assert speeds[0] > 12.0 and speeds[-1] == 0.0
        decel = -min(lead.motion.state(t).accel for t in np.arange(0.0, 8.0, 0.1))
        assert decel >= 6.0
        gaps = []
        for t in np.arange(0.0, 8.0, 0.05):
            snap = world.snapshot(float(t))
            a = next(a for a in snap.actors if a.spec.id == 1)
            assert abs(a.y) < 0.5                                          # in the ego lane
            gaps.append(snap.vehicle_position(a)[0] - a.spec.size[0] / 2 - EGO_FRONT)
        assert min(gaps) > 2.0 and gaps[-1] < gaps[0] - 10.0


def test_lead_brake_starts_braking_early_in_a_short_drive():
    world = SCENARIOS["lead_brake"](np.random.default_rng(1), 1.0)
    lead = next(a for a in world.actors if a.id == 1)
    assert lead.motion.state(0.9).vx < lead.motion.state(0.0).vx - 3.0


def test_cut_in_car_moves_into_the_ego_lane_ahead():
    for seed in range(5):
        world = SCENARIOS["cut_in"](np.random.default_rng(seed), 6.0)
        car = next(a for a in world.actors if a.id == 1)
        start, end = world.snapshot(0.0), world.snapshot(6.0)
        a0 = next(a for a in start.actors if a.spec.id == 1)
        a1 = next(a for a in end.actors if a.spec.id == 1)
        assert abs(abs(a0.y) - LANES_SAME[2]) < 0.01 and abs(a1.y) < 0.01
        assert 0.0 < start.vehicle_position(a0)[0] - car.size[0] / 2 - EGO_FRONT < 15.0
        lateral = [abs(world.snapshot(t).relative_velocity(
            next(a for a in world.snapshot(t).actors if a.spec.id == 1))[1]) for t in np.arange(0, 6, 0.1)]
        assert max(lateral) > 1.0


def test_crossing_pedestrians_cross_the_road_and_the_ego_stops_before_the_zebra():
    world = SCENARIOS["crossing"](np.random.default_rng(2), 20.0)
    crossers = [a for a in world.actors if abs(a.motion.heading) == pytest.approx(math.pi / 2)]
    assert len(crossers) >= 3
    for a in crossers:
        final_y = a.motion.state(40.0).y
        assert final_y > LEFT_CURB if a.motion.heading > 0 else final_y < RIGHT_CURB
    x_cross = next_crosswalk(30.0)
    assert all(abs(a.motion.origin[0] - x_cross) < CROSSWALK_WIDTH / 2 for a in crossers)
    assert world.ego.state(20.0).vx == 0.0
    assert world.ego.state(20.0).x + EGO_FRONT < x_cross - CROSSWALK_WIDTH / 2


def test_lateral_move_is_smooth():
    m = Motion((0.0, 0.0), 0.0, SpeedProfile(10.0), (LateralMove(1.0, 2.0, 3.5),))
    ys = [m.state(t).y for t in np.arange(0.0, 4.0, 0.01)]
    assert ys[0] == 0.0 and ys[-1] == pytest.approx(3.5)
    assert np.all(np.diff(ys) >= 0)
    assert m.state(2.0).vy == pytest.approx(3.5 * 30 * 0.25 ** 2 / 2.0)     # quintic peak rate / duration


def test_same_seed_same_world_and_different_seed_different_world():
    a, b = (SCENARIOS["mixed"](np.random.default_rng(7), 5.0) for _ in range(2))
    c = SCENARIOS["mixed"](np.random.default_rng(8), 5.0)
    assert a.actors == b.actors and a.clutter == b.clutter
    assert a.actors != c.actors
