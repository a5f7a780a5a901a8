"""Scenario builders: each turns a seeded numpy Generator and a duration into a collision-free `World`.

Scripted actors come first (the lead of `lead_brake` and the cutting car of `cut_in` get track id 1), then
random background traffic, pedestrians and a cyclist; a random actor whose path would overlap another
actor's or the ego's at any time of the drive is dropped, so nothing drives through anything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from replay.synth.motion import LateralMove, Motion, SpeedChange, SpeedProfile
from replay.synth.world import (
    CROSSWALK_WIDTH, EGO_FRONT, EGO_LENGTH, EGO_REAR_OVERHANG, EGO_WIDTH, LANES_ONCOMING, LANES_SAME,
    LEFT_CURB, LEFT_SIDEWALK, PARKING_Y, RIGHT_CURB, RIGHT_SIDEWALK, ActorSpec, Lighting, StaticBox, World,
    crosswalk_positions, footprint_halves, next_crosswalk,
)

_CAR_COLORS = ((0.92, 0.92, 0.92), (0.72, 0.72, 0.70), (0.12, 0.12, 0.13), (0.15, 0.15, 0.72),
               (0.60, 0.32, 0.15), (0.30, 0.30, 0.32), (0.22, 0.45, 0.22), (0.10, 0.72, 0.85))
_CARGO_COLORS = ((0.90, 0.90, 0.88), (0.65, 0.66, 0.66), (0.55, 0.35, 0.20), (0.20, 0.45, 0.70))
_SHIRT_COLORS = ((0.20, 0.20, 0.80), (0.80, 0.40, 0.10), (0.15, 0.65, 0.20), (0.85, 0.85, 0.85),
                 (0.10, 0.10, 0.10), (0.10, 0.60, 0.90), (0.60, 0.10, 0.50))
_PANTS_COLORS = ((0.45, 0.25, 0.12), (0.12, 0.12, 0.14), (0.35, 0.35, 0.38), (0.30, 0.45, 0.55))
_SKIN_COLORS = ((0.55, 0.68, 0.86), (0.40, 0.52, 0.70), (0.22, 0.32, 0.45))
_BUILDING_COLORS = ((0.62, 0.70, 0.78), (0.50, 0.52, 0.55), (0.25, 0.30, 0.55), (0.70, 0.70, 0.66))
_GLASS, _WHEEL, _BRAKE = (0.20, 0.16, 0.13), (0.07, 0.07, 0.07), (0.10, 0.10, 0.45)

TIME_STEP = 0.1   # s, grid of the collision check
MARGIN = 0.4      # m, extra clearance between footprints


@dataclass
class _Builder:
    rng: np.random.Generator
    seconds: float
    ego: Motion
    actors: list[ActorSpec] = field(default_factory=list)
    clutter: list[StaticBox] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = np.arange(0.0, self.seconds + 1.0, TIME_STEP)
        ego_track = self.ego.track(self.times)
        # the ego's footprint centre is ahead of its rear-axle origin
        ego_track[:, 0] += EGO_LENGTH / 2 - EGO_REAR_OVERHANG
        hx, hy = footprint_halves((EGO_LENGTH, EGO_WIDTH, 0.0), ego_track[:, 2])
        # (track [T, 3], half extents along x and y [T], swept bounding box) of everything placed so far
        self._tracks: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple]] = [
            (ego_track, hx, hy, _swept_box(ego_track, hx, hy))
        ]

    @property
    def next_id(self) -> int:
        return len(self.actors) + 1

    def ego_x(self, t: float) -> float:
        return self.ego.state(t).x

    def add(self, cls: str, size: tuple[float, float, float], motion: Motion) -> bool:
        """Add an actor unless its footprint ever overlaps an existing one (or the ego's)."""
        track = motion.track(self.times)
        hx, hy = footprint_halves(size, track[:, 2])
        swept = _swept_box(track, hx, hy)
        for other, ox, oy, other_swept in self._tracks:
            if not _boxes_overlap(swept, other_swept):
                continue
            overlap = ((np.abs(track[:, 0] - other[:, 0]) < hx + ox + MARGIN)
                       & (np.abs(track[:, 1] - other[:, 1]) < hy + oy + MARGIN))
            if overlap.any():
                return False
        self._tracks.append((track, hx, hy, swept))
        self.actors.append(ActorSpec(self.next_id, cls, size, self.palette(cls), motion))
        return True

    def pick(self, options: tuple) -> tuple:
        return options[int(self.rng.integers(len(options)))]

    def palette(self, cls: str) -> dict[str, tuple[float, float, float]]:
        if cls == "car":
            return {"body": self.pick(_CAR_COLORS), "glass": _GLASS, "wheel": _WHEEL, "brake": _BRAKE}
        if cls == "truck":
            return {"body": self.pick(_CAR_COLORS), "cargo": self.pick(_CARGO_COLORS), "glass": _GLASS,
                    "wheel": _WHEEL, "brake": _BRAKE}
        people = {"shirt": self.pick(_SHIRT_COLORS), "pants": self.pick(_PANTS_COLORS),
                  "skin": self.pick(_SKIN_COLORS)}
        if cls == "cyclist":
            people.update(bike=self.pick(_CAR_COLORS), wheel=_WHEEL)
        return people

    def size(self, cls: str) -> tuple[float, float, float]:
        u = self.rng.uniform
        if cls == "car":
            return (u(4.0, 4.9), u(1.7, 1.95), u(1.4, 1.65))
        if cls == "truck":
            return (u(7.5, 11.0), 2.5, u(3.2, 3.9))
        if cls == "pedestrian":
            return (0.5, u(0.5, 0.65), u(1.55, 1.9))
        return (1.75, 0.6, u(1.65, 1.85))

    def build(self, lighting: Lighting) -> World:
        elevation, azimuth = self.rng.uniform(0.45, 1.05), self.rng.uniform(0.0, 2 * math.pi)
        sun = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
        return World(self.ego, tuple(self.actors), tuple(self.clutter), lighting, sun)


def _swept_box(track: np.ndarray, hx: np.ndarray, hy: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) of everything a footprint covers over the whole drive, plus margin."""
    return ((track[:, 0] - hx).min() - MARGIN, (track[:, 1] - hy).min() - MARGIN,
            (track[:, 0] + hx).max() + MARGIN, (track[:, 1] + hy).max() + MARGIN)


def _boxes_overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _cruise(x: float, y: float, heading: float, speed: float, lateral: tuple[LateralMove, ...] = ()) -> Motion:
    return Motion((x, y), heading, SpeedProfile(speed), lateral)


def _add_vehicle_traffic(b: _Builder, density: float) -> None:
    """Vehicles in every lane over the stretch the ego will see, ~1 per `40 / density` m per lane."""
    ego_speed = b.ego.state(0.0).vx
    x0, x1 = b.ego_x(0.0), b.ego_x(b.seconds)
    for lane in LANES_SAME + LANES_ONCOMING:
        oncoming = lane in LANES_ONCOMING
        lane_speed = b.rng.uniform(10.0, 16.0) if oncoming else max(ego_speed + b.rng.uniform(-3.0, 3.0), 3.0)
        start = x0 - 60.0
        end = x1 + 180.0 + (lane_speed * b.seconds if oncoming else 0.0)
        x = start + b.rng.uniform(0.0, 30.0)
        while x < end:
            cls = "truck" if b.rng.random() < 0.2 else "car"
            speed = max(lane_speed + b.rng.uniform(-1.0, 1.0), 0.0)
            y = lane + b.rng.uniform(-0.25, 0.25)
            b.add(cls, b.size(cls), _cruise(x, y, math.pi if oncoming else 0.0, speed))
            x += b.rng.uniform(15.0, 70.0) / density


def _add_sidewalk_pedestrians(b: _Builder, density: float) -> None:
    x0, x1 = b.ego_x(0.0) - 30.0, b.ego_x(b.seconds) + 160.0
    for lo, hi in (RIGHT_SIDEWALK, LEFT_SIDEWALK):
        for _ in range(int(density * (x1 - x0) / 25.0)):
            x, y = b.rng.uniform(x0, x1), b.rng.uniform(lo + 0.4, hi - 0.4)
            speed = 0.0 if b.rng.random() < 0.25 else b.rng.uniform(0.8, 1.6)
            b.add("pedestrian", b.size("pedestrian"), _cruise(x, y, b.pick((0.0, math.pi)), speed))


def _crossing_motion(b: _Builder, x: float, leftwards: bool, t_start: float, speed: float) -> Motion:
    """Walk across the whole road from one sidewalk to the other, starting at `t_start` (may be < 0)."""
    y_from, y_to = (RIGHT_CURB - 0.6, LEFT_CURB + 0.8) if leftwards else (LEFT_CURB + 0.6, RIGHT_CURB - 0.8)
    distance, accel = abs(y_to - y_from), 1.0
    walked = 0.0
    if t_start < 0.0:  # already on the way at t = 0
        walked = min(speed * -t_start, distance - speed * speed)
        t_start = 0.0
    t_stop = t_start + (distance - walked - speed * speed / (2 * accel)) / speed
    if walked > 0.0:
        profile = SpeedProfile(speed, (SpeedChange(t_stop, accel, 0.0),))
    else:
        t_stop += speed / (2 * accel)
        profile = SpeedProfile(0.0, (SpeedChange(t_start, accel, speed), SpeedChange(t_stop, accel, 0.0)))
    heading = math.pi / 2 if leftwards else -math.pi / 2
    y0 = y_from + (walked if leftwards else -walked)
    return Motion((x, y0), heading, profile)


def _add_crossings(b: _Builder, count: int, xs: list[float], cyclist_prob: float = 0.0, tries: int = 20) -> None:
    """`count` road users crossing at the given crosswalk positions, at random times of the drive."""
    for _ in range(count):
        for _ in range(tries):
            cls = "cyclist" if b.rng.random() < cyclist_prob else "pedestrian"
            speed = b.rng.uniform(3.0, 5.0) if cls == "cyclist" else b.rng.uniform(1.1, 1.7)
            x = b.pick(tuple(xs)) + b.rng.uniform(-CROSSWALK_WIDTH / 2 + 0.5, CROSSWALK_WIDTH / 2 - 0.5)
            t_start = b.rng.uniform(-18.0 / speed, 0.7 * b.seconds)
            if b.add(cls, b.size(cls), _crossing_motion(b, x, bool(b.rng.random() < 0.5), t_start, speed)):
                break


def _add_clutter(b: _Builder) -> None:
    """Lamp posts along both sidewalks and a row of buildings behind each."""
    x0, x1 = b.ego_x(0.0) - 120.0, b.ego_x(b.seconds) + 400.0
    for y in (RIGHT_SIDEWALK[0] + 0.3, LEFT_SIDEWALK[1] - 0.3):
        x = x0 + b.rng.uniform(0.0, 30.0)
        while x < x1:
            b.clutter.append(StaticBox(x, y, 0.18, 0.18, 7.0, (0.35, 0.36, 0.38)))
            x += 30.0 + b.rng.uniform(-2.0, 2.0)
    for face_y, side in ((RIGHT_SIDEWALK[0] - 1.5, -1.0), (LEFT_SIDEWALK[1] + 1.5, 1.0)):
        x = x0
        while x < x1:
            length, depth = b.rng.uniform(12.0, 40.0), b.rng.uniform(8.0, 15.0)
            b.clutter.append(StaticBox(x + length / 2, face_y + side * depth / 2, length, depth,
                                       b.rng.uniform(6.0, 24.0), b.pick(_BUILDING_COLORS), backdrop=True))
            x += length + b.rng.uniform(3.0, 25.0)


def _random_ego(b_rng: np.random.Generator, lo: float, hi: float) -> Motion:
    return _cruise(0.0, 0.0, 0.0, b_rng.uniform(lo, hi))


def mixed(rng: np.random.Generator, seconds: float) -> World:
    """Traffic in all lanes with a lead car, pedestrians on the sidewalks and crossing, a cyclist; dusk falls."""
    b = _Builder(rng, seconds, _random_ego(rng, 11.0, 16.0))
    ego_speed = b.ego.state(0.0).vx
    lead_x, lead_speed = EGO_FRONT + rng.uniform(20.0, 40.0), ego_speed + rng.uniform(0.0, 1.0)
    b.add("car", b.size("car"), _cruise(lead_x, 0.0, 0.0, lead_speed))
    b.add("cyclist", b.size("cyclist"), _cruise(rng.uniform(25.0, 50.0), PARKING_Y, 0.0, rng.uniform(4.0, 6.0)))
    xs = crosswalk_positions(b.ego_x(0.0) + 25.0, b.ego_x(seconds) + 150.0) or [b.ego_x(seconds) + 60.0]
    _add_crossings(b, 2, xs)
    _add_vehicle_traffic(b, density=1.0)
    _add_sidewalk_pedestrians(b, density=1.0)
    _add_clutter(b)
    start = rng.uniform(0.0, 0.2)
    return b.build(Lighting(start, start + rng.uniform(0.3, 0.6), 20.0))


def lead_brake(rng: np.random.Generator, seconds: float) -> World:
    """The lead car (id 1) brakes hard to a stop; the ego reacts 0.8 s later and stops behind it."""
    ego_speed = rng.uniform(13.0, 17.0)
    gap = rng.uniform(22.0, 32.0)
    lead_len = rng.uniform(4.2, 4.8)
    lead_x = EGO_FRONT + gap + lead_len / 2
    t_brake = min(2.0, 0.25 * seconds)
    decel = rng.uniform(6.0, 8.0)
    lead = Motion((lead_x, 0.0), 0.0, SpeedProfile(ego_speed, (SpeedChange(t_brake, decel, 0.0),)))
    # the ego stops `stop_gap` behind the lead's stop point, braking from t_brake + reaction
    t_react, stop_gap = t_brake + 0.8, rng.uniform(4.0, 6.0)
    lead_stop = lead_x + ego_speed * t_brake + ego_speed**2 / (2 * decel) - lead_len / 2
    room = lead_stop - stop_gap - (ego_speed * t_react + EGO_FRONT)
    ego_decel = min(ego_speed**2 / (2 * max(room, 1.0)), 9.0)
    ego = Motion((0.0, 0.0), 0.0, SpeedProfile(ego_speed, (SpeedChange(t_react, ego_decel, 0.0),)))
    b = _Builder(rng, seconds, ego)
    size = (lead_len, rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6))
    if not b.add("car", size, lead):
        raise AssertionError("lead_brake: the scripted lead collides with the ego")
    _add_vehicle_traffic(b, density=0.8)
    _add_sidewalk_pedestrians(b, density=0.6)
    _add_clutter(b)
    start = rng.uniform(0.0, 0.3)
    return b.build(Lighting(start, start + rng.uniform(0.0, 0.2), 30.0))


def cut_in(rng: np.random.Generator, seconds: float) -> World:
    """A car (id 1) from an adjacent lane, slightly faster than the ego, cuts in close in front of it."""
    ego_speed = rng.uniform(12.0, 16.0)
    b = _Builder(rng, seconds, _cruise(0.0, 0.0, 0.0, ego_speed))
    side = rng.choice((-1.0, 1.0))
    length = rng.uniform(4.2, 4.8)
    x = EGO_FRONT + rng.uniform(5.0, 10.0) + length / 2
    move = LateralMove(min(1.5, 0.2 * seconds), rng.uniform(2.5, 3.5), -side * LANES_SAME[2])
    motion = _cruise(x, side * LANES_SAME[2], 0.0, ego_speed + rng.uniform(1.0, 2.0), (move,))
    if not b.add("car", (length, rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6)), motion):
        raise AssertionError("cut_in: the scripted car collides with the ego")
    b.add("car", b.size("car"), _cruise(EGO_FRONT + rng.uniform(45.0, 60.0), 0.0, 0.0, ego_speed + 1.0))
    _add_vehicle_traffic(b, density=0.8)
    _add_sidewalk_pedestrians(b, density=0.6)
    _add_clutter(b)
    start = rng.uniform(0.0, 0.3)
    return b.build(Lighting(start, start + rng.uniform(0.0, 0.2), 30.0))


def crossing(rng: np.random.Generator, seconds: float) -> World:
    """Pedestrians (and maybe a cyclist) cross at a zebra; a parked van hides some; the ego stops before it."""
    x_cross = next_crosswalk(30.0)
    speed, decel = rng.uniform(8.0, 11.0), 2.5
    stop_x = x_cross - CROSSWALK_WIDTH / 2 - rng.uniform(2.0, 4.0) - EGO_FRONT
    t_brake = max(0.0, (stop_x - speed**2 / (2 * decel)) / speed)
    decel = speed**2 / (2 * (stop_x - speed * t_brake))
    b = _Builder(rng, seconds, Motion((0.0, 0.0), 0.0, SpeedProfile(speed, (SpeedChange(t_brake, decel, 0.0),))))
    b.add("truck", (6.0, 2.2, 2.8), _cruise(x_cross - CROSSWALK_WIDTH / 2 - 5.0, PARKING_Y, 0.0, 0.0))
    _add_crossings(b, int(rng.integers(4, 7)), [x_cross], cyclist_prob=0.2)
    _add_vehicle_traffic(b, density=0.5)
    _add_sidewalk_pedestrians(b, density=0.8)
    _add_clutter(b)
    start = rng.uniform(0.0, 0.3)
    return b.build(Lighting(start, start + rng.uniform(0.0, 0.2), 30.0))


SCENARIOS: dict[str, Callable[[np.random.Generator, float], World]] = {
    "mixed": mixed, "lead_brake": lead_brake, "cut_in": cut_in, "crossing": crossing,
}
