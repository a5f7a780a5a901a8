"""Synthetic renderer: masks, boxes, occlusion and truncation agree with the geometry, through real lenses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calib.defaults import default_rig
from replay.synth.generator import resize_camera
from replay.synth.motion import Motion, SpeedProfile
from replay.synth.render import CLUTTER, CameraView
from replay.synth.texture import build_ground_texture
from replay.synth.world import RIGHT_EDGE, ActorSpec, Lighting, Snapshot, StaticBox, World

CAR = {"body": (0.15, 0.15, 0.72), "glass": (0.2, 0.16, 0.13), "wheel": (0.07, 0.07, 0.07), "brake": (0.1, 0.1, 0.45)}
PERSON = {"shirt": (0.8, 0.4, 0.1), "pants": (0.12, 0.12, 0.14), "skin": (0.4, 0.52, 0.7)}


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return build_ground_texture(np.random.default_rng(0))


@pytest.fixture(scope="module")
def front(texture) -> CameraView:
    return CameraView(resize_camera(default_rig(1).cameras[0], 480, 270), texture)


@pytest.fixture(scope="module")
def front_left(texture) -> CameraView:
    return CameraView(resize_camera(default_rig(2).cameras[1], 480, 270), texture)


def actor(id: int, cls: str, x: float, y: float, yaw: float = 0.0) -> ActorSpec:
    size = {"car": (4.5, 1.8, 1.5), "pedestrian": (0.5, 0.6, 1.75)}[cls]
    return ActorSpec(id, cls, size, CAR if cls == "car" else PERSON, Motion((x, y), yaw, SpeedProfile(0.0)))


def world_of(*actors: ActorSpec, clutter: tuple[StaticBox, ...] = ()) -> World:
    return World(Motion((0.0, 0.0), 0.0, SpeedProfile(0.0)), actors, clutter, Lighting(0.0, 0.0, 1.0),
                 (0.3, 0.2, 0.93))


def box_outline(camera, position, size, yaw, samples=40) -> np.ndarray:
    """Pixels of densely sampled edges of a labelled 3-D box (vehicle frame)."""
    l, w, h = size
    c, s = math.cos(yaw), math.sin(yaw)
    corners = np.array([[sx * l / 2, sy * w / 2, sz * h / 2] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    t = np.linspace(0, 1, samples)[:, None]
    edges = [corners[i] + t * (corners[j] - corners[i]) for i in range(8) for j in range(i + 1, 8)
             if np.count_nonzero(corners[i] != corners[j]) == 1]
    local = np.concatenate(edges)
    rotated = np.column_stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]])
    pts = rotated + position
    uv, valid = camera.project(pts)
    assert valid.all()
    return uv


def test_box_covers_exactly_the_pixels_its_object_changes(front):
    world = world_of(actor(1, "car", 20.0, 0.0), actor(2, "car", 14.0, 3.5, 0.3), actor(3, "pedestrian", 11.0, -4.0),
                     actor(4, "pedestrian", 30.0, 1.5))
    snap = world.snapshot(0.0)
    image, seen = front.render(world, snap)
    assert set(seen) == {1, 2, 3, 4}
    for a in snap.actors:
        pixels = seen[a.spec.id]
        x0, y0, x1, y1 = (int(round(v + 0.5)) for v in pixels.box)   # pixel-edge box -> index range
        without = Snapshot(snap.t, snap.ego_x, snap.ego_speed, tuple(b for b in snap.actors if b is not a))
        other, _ = front.render(world, without)
        changed = (image != other).any(axis=2)
        inside = np.zeros_like(changed)
        inside[y0:y1, x0:x1] = True
        # every pixel the object draws lies in its box, and the box is tight on all four sides
        assert changed[inside].sum() >= 0.95 * pixels.visible
        for edge in (changed[y0, x0:x1], changed[y1 - 1, x0:x1], changed[y0:y1, x0], changed[y0:y1, x1 - 1]):
            assert edge.any()
        # outside the box only its shadow on the ground changes, which darkens
        outside = changed & ~inside
        assert (image[outside].astype(int) <= other[outside].astype(int)).all()


def test_box_lies_within_the_projection_of_the_labelled_3d_box(front):
    world = world_of(actor(1, "car", 18.0, 0.5, 0.4), actor(2, "pedestrian", 12.0, 2.0, 1.2))
    snap = world.snapshot(0.0)
    _, seen = front.render(world, snap)
    for a in snap.actors:
        uv = box_outline(front.camera, snap.vehicle_position(a), a.spec.size, a.yaw)
        x0, y0, x1, y1 = seen[a.spec.id].box
        assert uv[:, 0].min() - 1.0 <= x0 and x1 <= uv[:, 0].max() + 1.0
        assert uv[:, 1].min() - 1.0 <= y0 and y1 <= uv[:, 1].max() + 1.0
        if a.spec.cls == "car":  # and a car, boxy, fills most of it
            assert (x1 - x0) > 0.85 * (uv[:, 0].max() - uv[:, 0].min())
            assert (y1 - y0) > 0.85 * (uv[:, 1].max() - uv[:, 1].min())


def test_objects_behind_the_camera_or_outside_the_view_get_no_pixels(front):
    world = world_of(actor(1, "car", -12.0, 0.0), actor(2, "car", 6.0, 25.0), actor(3, "car", 25.0, 0.0))
    _, seen = front.render(world, world.snapshot(0.0))
    assert set(seen) == {3}


def test_occlusion_is_the_hidden_share_of_the_silhouette(front):
    near, far = actor(1, "car", 15.0, 0.0), actor(2, "car", 30.0, 1.4)
    _, alone = front.render(world_of(far), world_of(far).snapshot(0.0))
    assert alone[2].visible == alone[2].own
    world = world_of(near, far)
    _, both = front.render(world, world.snapshot(0.0))
    assert both[2].own == alone[2].own                    # the silhouette ignores occluders
    assert both[2].visible < 0.5 * both[2].own            # mostly hidden behind the near car
    assert both[1].visible == both[1].own
    assert alone[2].box[2] - alone[2].box[0] > both[2].box[2] - both[2].box[0]  # the box is the visible part


def test_truncation_is_the_share_outside_the_image(front):
    half_fov = math.atan((front.camera.width / 2) / front.camera.fx)
    x = 12.0
    edge_y = -(x - front.camera.position[0]) * math.tan(half_fov)    # the image's right border at distance x
    shares = []
    for offset in (-3.0, -0.8, 0.0, 0.8, 3.0):
        world = world_of(actor(1, "car", x, edge_y + offset, math.pi / 2))
        _, seen = front.render(world, world.snapshot(0.0))
        shares.append(seen[1].truncation if 1 in seen else None)
    assert shares[0] is None                          # wholly outside
    assert 0.5 < shares[1] < 1.0 and 0.2 < shares[2] < 0.8 and 0.0 < shares[3] < 0.5
    assert shares[1] > shares[2] > shares[3]
    assert shares[4] == 0.0                           # wholly inside


def test_straight_edges_bend_with_the_lens(front_left):
    wall = StaticBox(19.0, 6.5, 42.0, 1.0, 3.0, (0.5, 0.5, 0.5))
    world = world_of(clutter=(wall,))
    front_left.render(world, world.snapshot(0.0))
    ids = front_left._ids
    # the wall's top silhouette is its near top edge (y = 6, z = 3): compare with the lens's projection
    edge = np.column_stack([np.linspace(-2.0, 40.0, 400), np.full(400, 6.0), np.full(400, 3.0)])
    uv, valid = front_left.camera.project(edge)
    uv = uv[valid & (uv[:, 0] > 5) & (uv[:, 0] < front_left.camera.width - 5) & (uv[:, 1] > 5)]
    assert len(uv) > 50
    order = np.argsort(uv[:, 0])
    curve_u, curve_v = uv[order, 0], uv[order, 1]
    columns = np.arange(int(curve_u[0]) + 1, int(curve_u[-1]))
    top = np.array([np.nonzero(ids[:, u] == CLUTTER)[0].min() for u in columns])
    expected = np.interp(columns, curve_u, curve_v)
    assert np.abs(top - expected).max() <= 1.5
    chord = np.interp(columns, [curve_u[0], curve_u[-1]], [curve_v[0], curve_v[-1]])
    assert np.abs(chord - expected).max() > 10.0      # the lens really bends this edge


def test_ground_markings_land_where_the_lens_projects_them(front):
    world = world_of()
    def at(grey: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Brightest pixel within 1 px of each point (the markings are only a few pixels wide here)."""
        r, c = np.rint(uv[:, 1]).astype(int), np.rint(uv[:, 0]).astype(int)
        return np.max([grey[r + dr, c + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)], axis=0)

    xs = np.linspace(14.0, 40.0, 12)
    for ego_x in (0.0, 7.3):
        grey = front.render(world, Snapshot(0.0, ego_x, 0.0, ()))[0].mean(axis=2)
        # the solid right edge line (white) and the asphalt 0.6 m inside it
        line, _ = front.camera.project(np.column_stack([xs, np.full(12, RIGHT_EDGE), np.zeros(12)]))
        asphalt, _ = front.camera.project(np.column_stack([xs, np.full(12, RIGHT_EDGE + 0.6), np.zeros(12)]))
        assert at(grey, line).min() > 180 and at(grey, asphalt).max() < 120
        # the dashes between the ego lane and the left lane stay put in the world as the ego moves:
        # the middle of a dash (world x = 12 k + 1.5) is white, the middle of a gap (12 k + 7.5) is not
        for phase, bright in ((1.5, True), (7.5, False)):
            xv = np.array([12.0 * k + phase - ego_x for k in range(5)])
            xv = xv[(xv > 9.0) & (xv < 32.0)]                # near enough that a pixel row spans < 2 m
            uv, _ = front.camera.project(np.column_stack([xv, np.full(len(xv), 1.75), np.zeros(len(xv))]))
            assert (at(grey, uv) > 180).all() if bright else (at(grey, uv) < 120).all()


def test_ground_texture_repeats_every_period(front):
    from replay.synth.world import TEXTURE_PERIOD

    world = world_of()
    a, _ = front.render(world, Snapshot(0.0, 3.0, 0.0, ()))
    b, _ = front.render(world, Snapshot(0.0, 3.0 + TEXTURE_PERIOD, 0.0, ()))
    assert np.abs(a.astype(int) - b).max() <= 1


def test_brake_lights_light_up_while_braking_and_standing(front):
    from replay.synth.motion import SpeedChange

    def rear_red(profile: SpeedProfile, t: float) -> float:
        car = ActorSpec(1, "car", (4.5, 1.8, 1.5), CAR, Motion((15.0, 0.0), 0.0, profile))
        world = world_of(car)
        snap = world.snapshot(t)
        image, _ = front.render(world, Snapshot(t, snap.actors[0].x - 15.0, 0.0, snap.actors))
        light, _ = front.camera.project(np.array([[15.0 - 2.25, 0.33 * 1.8, 0.82], [15.0 - 2.25, -0.33 * 1.8, 0.82]]))
        return float(np.mean([image[int(round(v)), int(round(u)), 2] for u, v in light]))

    cruising = rear_red(SpeedProfile(10.0), 0.5)
    braking = rear_red(SpeedProfile(10.0, (SpeedChange(0.0, 6.0, 0.0),)), 0.5)
    standing = rear_red(SpeedProfile(10.0, (SpeedChange(0.0, 6.0, 0.0),)), 5.0)
    assert braking > cruising + 80 and standing > cruising + 80
