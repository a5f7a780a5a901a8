"""The synthetic world: a straight road along world +x, the ego vehicle, scripted actors and roadside clutter.

World frame: x along the road, y to the left, z up, origin on the ground at the ego's rear axle at t = 0.
The ego keeps y = 0 and yaw 0, so a vehicle-frame point is the world point minus the ego's (x, 0, 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from replay.synth.motion import Motion, MotionBatch

# Road layout (lateral positions y in metres). Same-direction lanes right / ego / left, then two oncoming.
LANE_WIDTH = 3.5
LANES_SAME = (-3.5, 0.0, 3.5)
LANES_ONCOMING = (7.0, 10.5)
RIGHT_EDGE, MEDIAN, LEFT_EDGE = -5.25, 5.25, 12.25
RIGHT_CURB, LEFT_CURB = -7.5, 12.75          # road (asphalt) surface spans RIGHT_CURB..LEFT_CURB
CURB_WIDTH = 0.2
RIGHT_SIDEWALK = (-10.5, RIGHT_CURB - CURB_WIDTH)
LEFT_SIDEWALK = (LEFT_CURB + CURB_WIDTH, 15.75)
PARKING_Y = -6.4                            # parked vehicles / cyclists on the strip right of the edge line
TEXTURE_PERIOD = 96.0                       # the road texture repeats every this many metres along x
CROSSWALK_X = 60.0                          # zebra crossing position inside every texture period
CROSSWALK_WIDTH = 4.0
DASH_LENGTH, DASH_PERIOD = 3.0, 12.0

# The ego: origin under the rear axle; body from -EGO_REAR_OVERHANG to EGO_LENGTH - EGO_REAR_OVERHANG.
EGO_LENGTH, EGO_WIDTH, EGO_REAR_OVERHANG = 4.7, 1.9, 1.0
EGO_FRONT = EGO_LENGTH - EGO_REAR_OVERHANG

ACTOR_RANGE_M = 150.0   # actors farther than this from the ego are neither rendered nor labelled
CLUTTER_RANGE_M = 300.0


def next_crosswalk(x: float) -> float:
    """Position of the first zebra crossing at or after x."""
    return CROSSWALK_X + math.ceil((x - CROSSWALK_X) / TEXTURE_PERIOD) * TEXTURE_PERIOD


def crosswalk_positions(x_min: float, x_max: float) -> list[float]:
    k0 = math.ceil((x_min - CROSSWALK_X) / TEXTURE_PERIOD)
    k1 = math.floor((x_max - CROSSWALK_X) / TEXTURE_PERIOD)
    return [CROSSWALK_X + k * TEXTURE_PERIOD for k in range(k0, k1 + 1)]


@dataclass(frozen=True)
class Part:
    """A cuboid of an actor's shape in the actor frame (x forward from the box centre, z up from the ground).
    Every part lies inside the actor's labelled box (length, width, height)."""

    x: float
    y: float
    z0: float
    length: float
    width: float
    height: float
    role: str  # colour role, looked up in the actor's palette
    top_role: str | None = None  # colour role of the top face, if not `role`


def _car_parts(l: float, w: float, h: float) -> tuple[Part, ...]:
    body_h = 0.55 * h
    return (
        Part(0.0, 0.0, 0.3, l - 0.06, w - 0.04, body_h - 0.15, "body"),
        Part(-0.08 * l, 0.0, body_h + 0.15, 0.5 * l, 0.86 * w, h - body_h - 0.15, "glass", "body"),
        Part(0.3 * l, 0.0, 0.0, 0.62, w, 0.62, "wheel"),
        Part(-0.3 * l, 0.0, 0.0, 0.62, w, 0.62, "wheel"),
        Part(-l / 2 + 0.015, 0.33 * w, 0.75, 0.03, 0.22, 0.14, "brake"),
        Part(-l / 2 + 0.015, -0.33 * w, 0.75, 0.03, 0.22, 0.14, "brake"),
    )


def _truck_parts(l: float, w: float, h: float) -> tuple[Part, ...]:
    cab = 2.3
    return (
        Part(l / 2 - cab / 2 - 0.01, 0.0, 0.5, cab - 0.02, w - 0.06, 2.5, "body"),
        Part(l / 2 - 0.26, 0.0, 1.7, 0.5, w - 0.12, 1.0, "glass", "body"),
        Part(-cab / 2, 0.0, 0.9, l - cab - 0.06, w - 0.02, h - 0.9, "cargo"),
        Part(l / 2 - 1.2, 0.0, 0.0, 1.0, w, 1.0, "wheel"),
        Part(-l / 2 + 1.6, 0.0, 0.0, 2.4, w, 1.0, "wheel"),
        Part(-l / 2 + 0.015, 0.4 * w, 0.9, 0.03, 0.25, 0.18, "brake"),
        Part(-l / 2 + 0.015, -0.4 * w, 0.9, 0.03, 0.25, 0.18, "brake"),
    )


def _pedestrian_parts(l: float, w: float, h: float) -> tuple[Part, ...]:
    leg = 0.47 * h
    return (
        Part(0.0, 0.1 * w, 0.0, 0.22, 0.28 * w, leg, "pants"),
        Part(0.0, -0.1 * w, 0.0, 0.22, 0.28 * w, leg, "pants"),
        Part(0.0, 0.0, leg, 0.28, 0.75 * w, 0.39 * h, "shirt"),
        Part(0.0, 0.0, 0.86 * h + 0.01, 0.2, 0.3 * w, 0.14 * h - 0.01, "skin"),
    )


def _cyclist_parts(l: float, w: float, h: float) -> tuple[Part, ...]:
    return (
        Part(0.55 * l / 2, 0.0, 0.0, 0.66, 0.06, 0.66, "wheel"),
        Part(-0.55 * l / 2, 0.0, 0.0, 0.66, 0.06, 0.66, "wheel"),
        Part(0.0, 0.0, 0.45, 0.9, 0.07, 0.35, "bike"),
        Part(-0.1, 0.0, 0.6, 0.3, 0.42, 0.35, "pants"),
        Part(0.0, 0.0, 0.95, 0.35, 0.45, 0.55, "shirt"),
        Part(0.1, 0.0, 1.5, 0.2, 0.18, h - 1.5, "skin"),
    )


SHAPES = {"car": _car_parts, "truck": _truck_parts, "pedestrian": _pedestrian_parts, "cyclist": _cyclist_parts}


@dataclass(frozen=True)
class ActorSpec:
    """One labelled road user: track id, class, box size (length, width, height), palette and path."""

    id: int
    cls: str
    size: tuple[float, float, float]
    palette: dict[str, tuple[float, float, float]]  # role -> BGR in [0, 1]
    motion: Motion

    def parts(self) -> tuple[Part, ...]:
        return SHAPES[self.cls](*self.size)


@dataclass(frozen=True)
class StaticBox:
    """Unlabelled roadside clutter (poles, buildings): one cuboid in world coordinates, yaw 0.

    A `backdrop` box (a building beyond the sidewalk) is behind every actor from the ego's cameras, so the
    renderer paints it far-to-near under everything else instead of depth-testing it."""

    x: float
    y: float
    length: float
    width: float
    height: float
    color: tuple[float, float, float]
    backdrop: bool = False


@dataclass(frozen=True)
class Lighting:
    """Dusk level (0 = day, 1 = dusk) ramping linearly from `start` to `end` over `ramp_s` seconds."""

    start: float
    end: float
    ramp_s: float

    def dusk(self, t: float) -> float:
        return self.start + (self.end - self.start) * min(max(t / self.ramp_s, 0.0), 1.0)

    def gain(self, t: float) -> tuple[float, float, float]:
        """Per-channel (B, G, R) image gain."""
        d = self.dusk(t)
        level = 1.0 - 0.6 * d
        return (level, level * (1.0 - 0.06 * d), level * (1.0 - 0.14 * d))


@dataclass(frozen=True)
class ActorState:
    spec: ActorSpec
    x: float          # world box centre
    y: float
    yaw: float
    vx: float         # world velocity
    vy: float
    accel: float

    @property
    def braking(self) -> bool:
        """Brake lights: on while decelerating, and while standing after having changed speed (not parked)."""
        standing = math.hypot(self.vx, self.vy) < 0.1
        return self.accel < -1.0 or (standing and bool(self.spec.motion.speed.changes))


@dataclass(frozen=True)
class Snapshot:
    """The world at one instant, as the renderer and the labeller need it."""

    t: float
    ego_x: float
    ego_speed: float
    actors: tuple[ActorState, ...]   # within ACTOR_RANGE_M of the ego, sorted by id

    def vehicle_position(self, a: ActorState) -> tuple[float, float, float]:
        return (a.x - self.ego_x, a.y, a.spec.size[2] / 2)

    def relative_velocity(self, a: ActorState) -> tuple[float, float, float]:
        return (a.vx - self.ego_speed, a.vy, 0.0)


@dataclass(frozen=True)
class World:
    ego: Motion
    actors: tuple[ActorSpec, ...]
    clutter: tuple[StaticBox, ...]
    lighting: Lighting
    sun: tuple[float, float, float]  # unit vector towards the sun, world frame

    def __post_init__(self) -> None:
        object.__setattr__(self, "_motions", MotionBatch(tuple(a.motion for a in self.actors)))

    def snapshot(self, t: float) -> Snapshot:
        ego = self.ego.state(t)
        states = self._motions.states(np.array([t]))[:, 0]  # type: ignore[attr-defined]
        near = np.hypot(states[:, 0] - ego.x, states[:, 1]) <= ACTOR_RANGE_M
        actors = [ActorState(spec, *(float(v) for v in states[i])) for i, spec in enumerate(self.actors) if near[i]]
        return Snapshot(t, ego.x, ego.vx, tuple(sorted(actors, key=lambda s: s.spec.id)))

    def clutter_near(self, ego_x: float) -> list[StaticBox]:
        return [c for c in self.clutter if abs(c.x - ego_x) <= CLUTTER_RANGE_M]


def footprint_halves(size: tuple[float, float, float], yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half extents along world x and y of a (length, width) rectangle rotated by yaw."""
    l, w = size[0] / 2, size[1] / 2
    c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
    return l * c + w * s, l * s + w * c
