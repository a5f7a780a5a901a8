"""A simulated scene for the tracking, ranging and hint tests, and checks of the simulation itself.

Objects (cuboids standing on the road, aligned with the ego) move with known relative motions; each camera
frame projects their 8 corners through the real `calib` camera models (lens distortion included) to get the
true boxes, hides objects mostly covered by nearer ones, and adds noise like a detector's: box jitter, a
range head with relative error, an image-velocity head. Deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from calib.camera import CameraModel
from calib.defaults import default_rig
from perception.detections import Detections
from perception.labels import CLASS_INDEX

PERIOD_NS = 50_000_000  # 20 Hz

Motion = Callable[[float], tuple[np.ndarray, np.ndarray]]  # t (s) -> (centre xy, velocity xy), relative to ego


def cruise(x: float, y: float, vx: float = 0.0, vy: float = 0.0) -> Motion:
    def motion(t: float) -> tuple[np.ndarray, np.ndarray]:
        return np.array([x + vx * t, y + vy * t]), np.array([vx, vy])
    return motion


def braking(x: float, y: float, start_s: float, decel: float, vx: float = 0.0) -> Motion:
    """Relative vx until start_s, then the lead brakes at `decel` (m/s^2) while the ego keeps its speed."""
    def motion(t: float) -> tuple[np.ndarray, np.ndarray]:
        tb = max(0.0, t - start_s)
        return (np.array([x + vx * t - 0.5 * decel * tb * tb, y]), np.array([vx - decel * tb, 0.0]))
    return motion


@dataclass
class SimObject:
    id: int
    cls: str
    size: tuple[float, float, float]  # length, width, height (m)
    motion: Motion

    def corners(self, t: float) -> np.ndarray:
        (x, y), _ = self.motion(t)
        l, w, h = self.size
        return np.array([[x + sx * l / 2, y + sy * w / 2, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0, h)])


def car(id: int, motion: Motion) -> SimObject:
    return SimObject(id, "car", (4.5, 1.8, 1.5), motion)


def true_box(camera: CameraModel, corners: np.ndarray) -> np.ndarray | None:
    """The object's box in the camera (clipped to the image), None if not visible enough."""
    uv, valid = camera.project(corners)
    if not valid.all():
        return None
    x0, y0 = uv.min(0)
    x1, y1 = uv.max(0)
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, camera.width - 1.0), min(y1, camera.height - 1.0)
    if cx1 - cx0 < 4 or cy1 - cy0 < 8 or (cx1 - cx0) * (cy1 - cy0) < 0.5 * (x1 - x0) * (y1 - y0):
        return None
    return np.array([cx0, cy0, cx1, cy1])


@dataclass
class Scene:
    cameras: tuple[CameraModel, ...]
    objects: list[SimObject]
    seed: int = 0
    box_noise_px: float = 1.0        # std of each box coordinate
    head_rel_std: float = 0.05       # relative std of the range head (NaN everywhere when range_head is False)
    range_head: bool = True
    velocity_head: bool = True
    camera_skew_ns: int = 3_000_000  # camera c captures at t + c * skew
    hidden: set[tuple[int, int]] = field(default_factory=set)  # (object id, frame index) not detected
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def detect(self, camera_index: int, t_ns: int, frame: int) -> Detections:
        camera = self.cameras[camera_index]
        t = t_ns * 1e-9
        rows = []
        for obj in self.objects:
            box = true_box(camera, obj.corners(t))
            if box is None or (obj.id, frame) in self.hidden:
                continue
            centre, velocity = obj.motion(t)
            depth = np.linalg.norm(centre - camera.position[:2])
            rows.append((depth, obj, box))
        rows.sort(key=lambda r: r[0])
        kept: list[tuple[SimObject, np.ndarray]] = []
        for _, obj, box in rows:
            area = np.prod(box[2:] - box[:2])
            covered = max((_intersection(box, other) for _, other in kept), default=0.0)
            if covered < 0.6 * area:
                kept.append((obj, box))
        n = len(kept)
        dets = Detections(np.full(n, camera_index, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32),
                          np.zeros((n, 4), np.float32), np.full(n, np.nan, np.float32),
                          np.full((n, 2), np.nan, np.float32))
        for k, (obj, box) in enumerate(kept):
            dets.cls[k] = CLASS_INDEX[obj.cls]
            dets.score[k] = self.rng.uniform(0.7, 0.95)
            dets.box[k] = box + self.rng.normal(0.0, self.box_noise_px, 4)
            centre, _ = obj.motion(t)
            if self.range_head:
                dets.range_m[k] = np.hypot(*centre) * (1 + self.rng.normal(0.0, self.head_rel_std))
            if self.velocity_head:
                eps = 0.01
                before, after = true_box(camera, obj.corners(t - eps)), true_box(camera, obj.corners(t + eps))
                if before is not None and after is not None:
                    dets.image_velocity[k] = ((after[:2] + after[2:]) - (before[:2] + before[2:])) / (4 * eps)
                    dets.image_velocity[k] += self.rng.normal(0.0, 10.0, 2)
        return dets

    def frame_sets(self, n: int, dropped: frozenset[int] = frozenset(),
                   stale: Callable[[int, int], bool] = lambda camera, frame: False
                   ) -> Iterator[tuple[int, int, dict[int, int], Detections]]:
        """(frame index, frame-set t_ns, camera capture times, detections); frames in `dropped` never
        happen (the next set is 2 periods later); stale(camera, frame) leaves a camera out of a set."""
        for frame in range(n):
            if frame in dropped:
                continue
            t_ns = frame * PERIOD_NS
            camera_t = {c: t_ns + c * self.camera_skew_ns for c in range(len(self.cameras)) if not stale(c, frame)}
            dets = Detections.concatenate([self.detect(c, ct, frame) for c, ct in camera_t.items()])
            yield frame, t_ns + (len(self.cameras) - 1) * self.camera_skew_ns, camera_t, dets

    def truth(self, t_ns: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {obj.id: obj.motion(t_ns * 1e-9) for obj in self.objects}


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(w, 0.0) * max(h, 0.0))


def front_rig(num_cameras: int = 1) -> tuple[CameraModel, ...]:
    return default_rig(num_cameras).cameras


def match_truth(positions: np.ndarray, truth: dict[int, tuple[np.ndarray, np.ndarray]],
                max_distance: float) -> list[int | None]:
    """The truth id nearest to each position (None if farther than max_distance)."""
    ids = list(truth)
    centres = np.array([truth[i][0] for i in ids])
    out: list[int | None] = []
    for p in positions:
        d = np.linalg.norm(centres - p[:2], axis=1)
        out.append(ids[int(np.argmin(d))] if d.min() <= max_distance else None)
    return out


# ---- the simulation itself ---------------------------------------------------------------------------------
def test_true_box_bottom_is_the_nearest_ground_edge():
    """Straight ahead, the box bottom is the rear bumper's ground line: its ray meets the road at x - l/2."""
    front = front_rig()[0]
    obj = car(1, cruise(25.0, 0.0))
    box = true_box(front, obj.corners(0.0))
    ground, valid = front.pixel_to_ground(np.array([[(box[0] + box[2]) / 2, box[3]]]))
    assert valid[0]
    assert abs(ground[0, 0] - (25.0 - 2.25)) < 0.05 and abs(ground[0, 1]) < 0.05


def test_nearer_object_hides_the_one_behind():
    front = front_rig()[0]
    scene = Scene((front,), [car(1, cruise(15.0, 0.0)), car(2, cruise(40.0, 0.0))], box_noise_px=0.0)
    dets = scene.detect(0, 0, 0)
    assert len(dets) == 1 and abs(dets.range_m[0] - 15.0) < 3.0


def test_image_velocity_head_matches_motion():
    front = front_rig()[0]
    scene = Scene((front,), [car(1, cruise(20.0, 3.0, 0.0, -1.0))], box_noise_px=0.0)
    dets = scene.detect(0, 0, 0)
    # a lateral move of 1 m/s at 20 m is about fx / 20 px/s to the right (y left -> u right)
    assert abs(dets.image_velocity[0, 0] - front.fx / (20.0 - front.position[0])) < 20.0
