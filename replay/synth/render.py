"""Render one camera's view of a world snapshot through its distorted lens model, with per-object masks.

- Ground and sky: each pixel's viewing ray is intersected with the ground once per camera; a frame then
  only samples the periodic ground texture at those points shifted by the ego's travel (one `cv2.remap`)
  and blends it with the precomputed haze / sky.
- Solids (actors and roadside clutter) are cuboids. Each front-facing face is clipped to the view frustum
  (so nothing reaches the lens model beyond its one-to-one range), its edges are subdivided in 3-D and
  projected with `CameraModel.project_camera` (straight edges curve as the lens bends them), filled with
  `cv2.fillPoly`, and depth-tested per pixel: a pixel's depth on the face's plane comes from the pixel's
  own viewing ray, so the z-buffer is exact under distortion.
- Per labelled actor the renderer reports the silhouette (own pixels, ignoring occluders), the visible
  pixels (it is the nearest surface) and the truncation (share of the silhouette outside the image,
  measured on a wider distortion-free canvas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from calib.camera import CameraModel
from perception.errors import CalibrationError
from replay.synth.texture import RESOLUTION, TEXTURE_PERIOD, texture_coordinates
from replay.synth.world import ActorState, Snapshot, World

NEAR_M = 0.1
VISIBILITY_M = 900.0          # haze: a surface this far keeps 1/e of its own colour
HAZE = (0.86, 0.80, 0.74)     # BGR colour of the horizon haze (= sky at the horizon)
ZENITH = (0.80, 0.52, 0.30)
SHADOW = 0.55                 # ground brightness under an actor
SEGMENT_RAD = 0.01            # edges are subdivided into pieces of at most this viewing angle
FRUSTUM_MARGIN = 1.03         # the clip frustum reaches this much past the image border (normalized units)
CANVAS_REACH = 1.6            # truncation canvas: this many times the frustum's extent
CANVAS_MAX_TAN = math.tan(math.radians(80.0))
CANVAS_MAX_WIDTH = 640
BRAKE_LIGHT = (0.25, 0.25, 1.0)
CLUTTER, BACKDROP = -2, -3    # owners of unlabelled faces: depth-tested / painted first, far to near

# Cuboid corners: index = 4 * ix + 2 * iy + iz (0 = min, 1 = max along the actor's x, y, z); faces with
# their outward normals in the actor frame, vertices in order around the face.
_CORNER_SIGNS = np.array([[ix, iy, iz] for ix in (0, 1) for iy in (0, 1) for iz in (0, 1)], np.float64)
_FACES = np.array([[4, 6, 7, 5], [0, 1, 3, 2], [2, 3, 7, 6], [0, 4, 5, 1], [1, 5, 7, 3], [0, 2, 6, 4]])
_FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)


@dataclass(frozen=True)
class ObjectPixels:
    """What one camera sees of one actor."""

    own: int            # silhouette pixels inside the image, occluders ignored
    visible: int        # pixels where the actor is the nearest surface
    box: tuple[float, float, float, float] | None  # extent of the visible pixels, pixel edges
    truncation: float   # share of the silhouette outside the image


@dataclass
class _Solids:
    """Front-facing faces to draw, in the camera frame."""

    polygons: list[np.ndarray]     # [k, 3] each
    normals: np.ndarray            # [F, 3]
    colours: np.ndarray            # [F, 3] BGR uint8, shaded and hazed
    owners: np.ndarray             # [F] actor index into the snapshot, CLUTTER or BACKDROP
    keys: np.ndarray               # [F] distance of the face's cuboid from the camera (painter's order)
    front: dict[int, np.ndarray]   # actor index -> all its front faces [G, 4, 3], unclipped
    beyond: set[int]               # actors with a face not wholly inside the frustum


class CameraView:
    """Everything about one camera that does not change from frame to frame."""

    def __init__(self, camera: CameraModel, ground_texture: np.ndarray, ray_step: int = 4):
        self.camera = camera
        self.texture = ground_texture
        w, h = camera.width, camera.height
        self.R = camera.R_vehicle_camera            # camera -> vehicle rotation
        self.position = camera.position
        self.nx, self.ny = _normalized_grid(camera, ray_step)
        self.planes = _frustum_planes(camera)
        self._build_background()
        self._build_canvas()
        self._zbuf = np.empty((h, w), np.float32)
        self._ids = np.empty((h, w), np.int16)

    # ---- static precomputation -------------------------------------------------------------------------
    def _build_background(self) -> None:
        rays = np.stack([self.nx, self.ny, np.ones_like(self.nx)], axis=-1) @ self.R.T.astype(np.float32)
        length = np.linalg.norm(rays, axis=-1)
        px, py, pz = (float(v) for v in self.position)
        down = rays[..., 2] < -1e-6
        scale = np.full(down.shape, np.inf, np.float32)
        scale[down] = pz / -rays[..., 2][down]                  # ray length to the ground
        with np.errstate(invalid="ignore"):
            ground_x = px + scale * rays[..., 0]
            ground_y = py + scale * rays[..., 1]
        keep = np.zeros(down.shape, np.float32)                # share of the ground's own colour after haze
        keep[down] = np.exp(-(scale * length)[down] / VISIBILITY_M)
        keep[keep < 1e-3] = 0.0
        elevation = np.arcsin(np.clip(rays[..., 2] / length, -1.0, 1.0))
        sky_mix = np.clip(elevation / math.radians(35.0), 0.0, 1.0)[..., None]
        sky = np.asarray(HAZE, np.float32) * (1 - sky_mix) + np.asarray(ZENITH, np.float32) * sky_mix
        self.static_bg = np.clip(255.0 * sky * (1.0 - keep)[..., None] + 0.5, 0, 255).astype(np.uint8)
        self.alpha = np.repeat(np.clip(255.0 * keep + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        rows = np.nonzero(keep.max(axis=1) > 0)[0]
        self.ground_rows = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
        r0, r1 = self.ground_rows
        finite = np.isfinite(ground_x[r0:r1])
        col, row = texture_coordinates(np.where(finite, ground_x[r0:r1], 0.0), np.where(finite, ground_y[r0:r1], 0.0))
        self.map_col, self.map_row = col, row

    def _build_canvas(self) -> None:
        """A distortion-free canvas wider than the image, and which of its pixels the image covers."""
        corners = _hull_vertices(self.planes)
        reach_x = min(CANVAS_REACH * np.abs(corners[:, 0]).max(), CANVAS_MAX_TAN)
        reach_y = min(CANVAS_REACH * np.abs(corners[:, 1]).max(), CANVAS_MAX_TAN)
        f = min(self.camera.fx / 2, CANVAS_MAX_WIDTH / (2 * reach_x))
        self.canvas_f = f
        self.canvas_size = (int(math.ceil(2 * reach_x * f)), int(math.ceil(2 * reach_y * f)))
        self.canvas_c = ((self.canvas_size[0] - 1) / 2, (self.canvas_size[1] - 1) / 2)
        self.canvas_planes = np.array([[1, 0, reach_x], [-1, 0, reach_x], [0, 1, reach_y], [0, -1, reach_y],
                                       [0, 0, 1]], np.float64)
        cw, ch = self.canvas_size
        u, v = np.meshgrid(np.arange(cw), np.arange(ch))
        xy = np.stack([(u - self.canvas_c[0]) / f, (v - self.canvas_c[1]) / f], axis=-1).reshape(-1, 2)
        in_frustum = np.all(np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ self.planes.T >= 0, axis=1)
        uv, valid = self.camera.normalized_to_pixel(xy)
        w, h = self.camera.width, self.camera.height
        in_image = (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
        inside = in_frustum & valid & in_image
        self.canvas_inside = inside.reshape(ch, cw)

    # ---- per frame -------------------------------------------------------------------------------------
    def render(self, world: World, snap: Snapshot) -> tuple[np.ndarray, dict[int, ObjectPixels]]:
        """The ideal image (before lighting and sensor effects) and what is seen of each actor, by id."""
        image = self._background(snap.ego_x)
        solids = self._solids(world, snap)
        self._draw_shadows(image, snap)
        self._zbuf.fill(np.inf)
        self._ids.fill(-1)
        own = self._rasterize(image, solids)
        return image, self._measure(snap, solids, own)

    def _background(self, ego_x: float) -> np.ndarray:
        image = self.static_bg.copy()
        r0, r1 = self.ground_rows
        if r1 > r0:
            shift = np.float32((ego_x / RESOLUTION) % (TEXTURE_PERIOD / RESOLUTION))
            ground = cv2.remap(self.texture, self.map_col, self.map_row + shift, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_WRAP)
            ground = cv2.cvtColor(ground, cv2.COLOR_BGRA2BGR)
            ground = cv2.multiply(ground, self.alpha[r0:r1], scale=1.0 / 255.0)
            image[r0:r1] = cv2.add(ground, image[r0:r1])
        return image

    def _to_camera(self, points_vehicle: np.ndarray) -> np.ndarray:
        return (points_vehicle - self.position) @ self.R

    def _solids(self, world: World, snap: Snapshot) -> _Solids:
        boxes, colours, owners = [], [], []
        for index, actor in enumerate(snap.actors):
            for part in actor.spec.parts():
                c, s = math.cos(actor.yaw), math.sin(actor.yaw)
                x = actor.x - snap.ego_x + c * part.x - s * part.y
                y = actor.y + s * part.x + c * part.y
                boxes.append((x, y, part.z0, part.length, part.width, part.height, actor.yaw))
                side = _role_colour(actor, part.role)
                top = side if part.top_role is None else _role_colour(actor, part.top_role)
                colours.append((side,) * 4 + (top, side))
                owners.append(index)
        for clutter in world.clutter_near(snap.ego_x):
            boxes.append((clutter.x - snap.ego_x, clutter.y, 0.0, clutter.length, clutter.width, clutter.height, 0.0))
            colours.append((clutter.color,) * 6)
            owners.append(BACKDROP if clutter.backdrop else CLUTTER)
        if not boxes:
            return _Solids([], np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, int), np.zeros(0), {}, set())
        return self._faces(np.array(boxes), np.array(colours), np.array(owners), world.sun)

    def _faces(self, boxes: np.ndarray, albedo: np.ndarray, owners: np.ndarray, sun: tuple) -> _Solids:
        """Cuboids [B, 7] (x, y, z0, length, width, height, yaw; vehicle frame) with face colours [B, 6, 3]."""
        x, y, z0, length, width, height, yaw = boxes.T
        c, s = np.cos(yaw), np.sin(yaw)
        local = (_CORNER_SIGNS[None] - [0.5, 0.5, 0.0]) * np.stack([length, width, height], axis=1)[:, None]
        corners = np.stack([x[:, None] + c[:, None] * local[..., 0] - s[:, None] * local[..., 1],
                            y[:, None] + s[:, None] * local[..., 0] + c[:, None] * local[..., 1],
                            z0[:, None] + local[..., 2]], axis=-1)                       # [B, 8, 3] vehicle
        normals = np.stack([c[:, None] * _FACE_NORMALS[:, 0] - s[:, None] * _FACE_NORMALS[:, 1],
                            s[:, None] * _FACE_NORMALS[:, 0] + c[:, None] * _FACE_NORMALS[:, 1],
                            np.broadcast_to(_FACE_NORMALS[:, 2], (len(boxes), 6))], axis=-1)  # [B, 6, 3]
        corners_cam = self._to_camera(corners)
        keys = np.repeat(np.linalg.norm(corners_cam.mean(axis=1), axis=1), 6)
        quads = corners_cam[:, _FACES].reshape(-1, 4, 3)
        normals = normals.reshape(-1, 3)
        normals_cam = normals @ self.R
        front = np.einsum("fi,fi->f", normals_cam, quads[:, 0]) < 0
        distances = np.einsum("fki,pi->fkp", quads, self.planes) - _near_offsets(self.planes)
        outside = (distances < 0).all(axis=1).any(axis=1)
        inside = (distances >= 0).all(axis=(1, 2))
        keep = front & ~outside
        shade = 0.42 + 0.12 * normals[:, 2] + 0.62 * np.maximum(normals @ np.asarray(sun), 0.0)
        face_albedo = albedo.reshape(-1, 3)
        emissive = (face_albedo == BRAKE_LIGHT).all(axis=1)
        colour = np.where(emissive[:, None], face_albedo, face_albedo * shade[:, None])
        haze = 1.0 - np.exp(-np.linalg.norm(quads.mean(axis=1), axis=1) / VISIBILITY_M)
        colour = 255.0 * (colour * (1 - haze[:, None]) + np.asarray(HAZE) * haze[:, None])
        colour = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
        face_owners = np.repeat(owners, 6)
        actor_front = front & (face_owners >= 0)
        front_quads = {int(o): quads[actor_front & (face_owners == o)] for o in np.unique(face_owners[actor_front])}
        beyond = {int(o) for o in np.unique(face_owners[actor_front & ~inside])}
        polygons, kept = [], []
        for f in np.nonzero(keep)[0]:
            poly = quads[f] if inside[f] else _clip(quads[f], self.planes)
            if poly is not None:
                polygons.append(poly)
                kept.append(f)
        kept_idx = np.array(kept, int)
        return _Solids(polygons, normals_cam[kept_idx], colour[kept_idx], face_owners[kept_idx], keys[kept_idx],
                       front_quads, beyond)

    def _project_polygons(self, polygons: list[np.ndarray]) -> tuple[list[np.ndarray], list]:
        """Subdivide every polygon's edges by viewing angle and project them through the lens model.
        Returns the pixel outlines and their bounding ROIs in the image (None where empty)."""
        if not polygons:
            return [], []
        counts = np.array([len(p) for p in polygons])
        starts = np.concatenate(polygons)
        first_vertex = np.repeat(np.cumsum(counts) - counts, counts)
        next_vertex = np.arange(len(starts)) + 1
        wrap = next_vertex == np.repeat(np.cumsum(counts), counts)
        next_vertex[wrap] = first_vertex[wrap]
        ends = starts[next_vertex]
        a = starts / np.linalg.norm(starts, axis=1, keepdims=True)
        b = ends / np.linalg.norm(ends, axis=1, keepdims=True)
        angle = np.arccos(np.clip(np.einsum("ei,ei->e", a, b), -1.0, 1.0))
        pieces = np.clip(np.ceil(angle / SEGMENT_RAD), 1, 256).astype(int)
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        frac = (np.arange(pieces.sum()) - first) / np.repeat(pieces, pieces)
        points = np.repeat(starts, pieces, axis=0) + frac[:, None] * np.repeat(ends - starts, pieces, axis=0)
        uv, _ = self.camera.project_camera(points)
        per_polygon = np.add.reduceat(pieces, np.cumsum(counts) - counts)
        offsets = np.cumsum(per_polygon) - per_polygon
        lo = np.floor(np.minimum.reduceat(uv, offsets)).astype(int)
        hi = np.ceil(np.maximum.reduceat(uv, offsets)).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, [self.camera.width, self.camera.height])
        rois = [(int(l[0]), int(l[1]), int(h[0]), int(h[1])) if h[0] > l[0] and h[1] > l[1] else None
                for l, h in zip(lo, hi)]
        return np.split(uv, offsets[1:]), rois

    def _draw_shadows(self, image: np.ndarray, snap: Snapshot) -> None:
        polygons = []
        for actor in snap.actors:
            l, w, _ = actor.spec.size
            c, s = math.cos(actor.yaw), math.sin(actor.yaw)
            local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [(l + 0.3) / 2, (w + 0.3) / 2]
            pts = np.column_stack([actor.x - snap.ego_x + c * local[:, 0] - s * local[:, 1],
                                   actor.y + s * local[:, 0] + c * local[:, 1], np.full(4, 0.01)])
            poly = _clip(self._to_camera(pts), self.planes)
            if poly is not None:
                polygons.append(poly)
        for uv, roi in zip(*self._project_polygons(polygons)):
            if roi is None:
                continue
            x0, y0, x1, y1 = roi
            patch = image[y0:y1, x0:x1]
            darker = cv2.multiply(patch, (SHADOW, SHADOW, SHADOW, 0.0))
            np.copyto(patch, darker, where=_fill(uv, roi)[..., None])

    def _rasterize(self, image: np.ndarray, solids: _Solids) -> dict[int, tuple[tuple, np.ndarray]]:
        """Depth-tested fill of every face; returns each actor's silhouette mask (in its bounding ROI)."""
        outlines, rois = self._project_polygons(solids.polygons)
        backdrop = np.nonzero(solids.owners == BACKDROP)[0]
        for i in backdrop[np.argsort(-solids.keys[backdrop], kind="stable")]:
            cv2.fillPoly(image, [_fixed(outlines[i])], solids.colours[i].tolist(), cv2.LINE_8, _SHIFT)
        own: dict[int, tuple[tuple[int, int, int, int], np.ndarray]] = {}
        for owner in np.unique(solids.owners[solids.owners >= 0]):
            boxes = [rois[i] for i in np.nonzero(solids.owners == owner)[0] if rois[i] is not None]
            if boxes:
                b = np.array(boxes)
                roi = (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))
                own[int(owner)] = (roi, np.zeros((roi[3] - roi[1], roi[2] - roi[0]), bool))
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, (uv, roi) in enumerate(zip(outlines, rois)):
                if roi is not None and solids.owners[i] != BACKDROP:
                    self._depth_test(image, uv, roi, solids, i, own)
        return own

    def _depth_test(self, image: np.ndarray, uv: np.ndarray, roi: tuple[int, int, int, int], solids: _Solids,
                    i: int, own: dict) -> None:
        """Fill face i where it is nearer than what is drawn; add it to its actor's silhouette."""
        x0, y0, x1, y1 = roi
        mask = _fill(uv, roi)
        # z-depth on the face's plane n . p = d along each pixel's ray p = z (x, y, 1); a front face has
        # n . (x, y, 1) < 0 wherever its mask is set
        n0, n1, n2 = (float(c) for c in solids.normals[i])
        d = float(solids.normals[i] @ solids.polygons[i][0])
        denominator = self.nx[y0:y1, x0:x1] * n0
        denominator += self.ny[y0:y1, x0:x1] * n1
        denominator += n2
        depth = np.divide(d, denominator, out=denominator)
        zbuf = self._zbuf[y0:y1, x0:x1]
        win = np.less(depth, zbuf, out=np.zeros_like(mask), where=mask)
        np.copyto(zbuf, depth, where=win)
        np.copyto(image[y0:y1, x0:x1], solids.colours[i], where=win[..., None])
        owner = int(solids.owners[i])
        np.copyto(self._ids[y0:y1, x0:x1], owner, where=win, casting="unsafe")
        if owner >= 0:
            (ox0, oy0, _, _), silhouette = own[owner]
            silhouette[y0 - oy0:y1 - oy0, x0 - ox0:x1 - ox0] |= mask

    def _measure(self, snap: Snapshot, solids: _Solids, own: dict) -> dict[int, ObjectPixels]:
        out: dict[int, ObjectPixels] = {}
        for owner, ((x0, y0, x1, y1), silhouette) in own.items():
            own_px = int(silhouette.sum())
            if own_px == 0:
                continue
            visible = self._ids[y0:y1, x0:x1] == owner
            visible_px = int(visible.sum())
            box = None
            if visible_px:
                rows, cols = np.nonzero(visible.any(axis=1))[0], np.nonzero(visible.any(axis=0))[0]
                box = (x0 + cols[0] - 0.5, y0 + rows[0] - 0.5, x0 + cols[-1] + 0.5, y0 + rows[-1] + 0.5)
            touches_border = ((x0 == 0 and silhouette[:, 0].any()) or (y0 == 0 and silhouette[0].any())
                              or (x1 == self.camera.width and silhouette[:, -1].any())
                              or (y1 == self.camera.height and silhouette[-1].any()))
            truncated = touches_border or owner in solids.beyond
            truncation = self._truncation(solids.front[owner]) if truncated else 0.0
            out[snap.actors[owner].spec.id] = ObjectPixels(own_px, visible_px, box, truncation)
        return out

    def _truncation(self, quads: np.ndarray) -> float:
        """Share of the actor's silhouette on the distortion-free canvas that falls outside the image."""
        cw, ch = self.canvas_size
        outlines = []
        for quad in quads:
            clipped = _clip(quad, self.canvas_planes)
            if clipped is not None:
                xy = clipped[:, :2] / clipped[:, 2:3]
                outlines.append(np.column_stack([xy[:, 0] * self.canvas_f + self.canvas_c[0],
                                                 xy[:, 1] * self.canvas_f + self.canvas_c[1]]))
        total = inside = 0
        if outlines:
            all_uv = np.concatenate(outlines)
            roi = _roi(all_uv, (ch, cw))
            if roi is not None:
                x0, y0, x1, y1 = roi
                mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
                for uv in outlines:
                    cv2.fillPoly(mask, [_fixed(uv - [x0, y0])], 1, cv2.LINE_8, _SHIFT)
                mask = mask.astype(bool)
                total = int(mask.sum())
                inside = int((mask & self.canvas_inside[y0:y1, x0:x1]).sum())
        return 1.0 - inside / total if total else 0.0


_SHIFT = 4


def _fixed(uv: np.ndarray) -> np.ndarray:
    return np.round(uv * (1 << _SHIFT)).astype(np.int32)


def _roi(uv: np.ndarray, shape: tuple) -> tuple[int, int, int, int] | None:
    """Integer pixel bounds [x0, x1) x [y0, y1) of a projected outline, clipped to the image."""
    h, w = shape[:2]
    if not np.all(np.isfinite(uv)):
        return None
    x0 = max(int(math.floor(uv[:, 0].min())), 0)
    y0 = max(int(math.floor(uv[:, 1].min())), 0)
    x1 = min(int(math.ceil(uv[:, 0].max())) + 1, w)
    y1 = min(int(math.ceil(uv[:, 1].max())) + 1, h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _fill(uv: np.ndarray, roi: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = roi
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [_fixed(uv - [x0, y0])], 1, cv2.LINE_8, _SHIFT)
    return mask.view(bool)


def _clip(polygon: np.ndarray, planes: np.ndarray) -> np.ndarray | None:
    """Sutherland-Hodgman clip of a camera-frame polygon to {p : plane . p >= 0 for the side planes,
    z >= near}; `planes`' last row is the near plane (0, 0, 1)."""
    poly = polygon
    for plane, offset in zip(planes, _near_offsets(planes)):
        d = poly @ plane - offset
        if (d >= 0).all():
            continue
        if (d < 0).all():
            return None
        out = []
        n = len(poly)
        for i in range(n):
            j = (i + 1) % n
            if d[i] >= 0:
                out.append(poly[i])
            if (d[i] >= 0) != (d[j] >= 0):
                t = d[i] / (d[i] - d[j])
                out.append(poly[i] + t * (poly[j] - poly[i]))
        poly = np.array(out)
        if len(poly) < 3:
            return None
    return poly


def _near_offsets(planes: np.ndarray) -> np.ndarray:
    """Right-hand sides of the clip planes: 0 for the side planes through the camera, NEAR_M for the last."""
    offsets = np.zeros(len(planes))
    offsets[-1] = NEAR_M
    return offsets


def _role_colour(actor: ActorState, role: str) -> tuple[float, float, float]:
    if role == "brake" and actor.braking:
        return BRAKE_LIGHT
    return actor.spec.palette[role]


def _normalized_grid(camera: CameraModel, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted normalized coordinates (x/z, y/z) of every pixel, float32 [H, W] each: solved exactly
    on a grid every `step` pixels and interpolated bilinearly in between (the map is smooth)."""
    w, h = camera.width, camera.height
    gx = np.linspace(0.0, w - 1.0, max(int(math.ceil((w - 1) / step)) + 1, 2))
    gy = np.linspace(0.0, h - 1.0, max(int(math.ceil((h - 1) / step)) + 1, 2))
    u, v = np.meshgrid(gx, gy)
    xy = camera.undistort_points(np.column_stack([u.ravel(), v.ravel()]))
    if not np.all(np.isfinite(xy)):
        raise CalibrationError(f"camera {camera.name!r}: some pixels lie outside the lens model's one-to-one "
                               "range; the synthetic renderer needs every pixel to have a viewing ray")
    grid = xy.reshape(len(gy), len(gx), 2).astype(np.float32)
    map_x = np.broadcast_to((np.arange(w, dtype=np.float32) * ((len(gx) - 1) / (w - 1)))[None, :], (h, w))
    map_y = np.broadcast_to((np.arange(h, dtype=np.float32) * ((len(gy) - 1) / (h - 1)))[:, None], (h, w))
    full = cv2.remap(grid, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(full[..., 0]), np.ascontiguousarray(full[..., 1])


def _frustum_planes(camera: CameraModel) -> np.ndarray:
    """Planes through the camera centre (rows n, inside where n . p >= 0) bounding a convex region slightly
    larger than the image and inside the lens model's one-to-one cone; the last row is the near plane."""
    w, h = camera.width, camera.height
    t = np.linspace(0.0, 1.0, 17)
    border = np.concatenate([np.column_stack([t * (w - 1), np.zeros_like(t)]),
                             np.column_stack([np.full_like(t, w - 1.0), t * (h - 1)]),
                             np.column_stack([t[::-1] * (w - 1), np.full_like(t, h - 1.0)]),
                             np.column_stack([np.zeros_like(t), t[::-1] * (h - 1)])])
    border = np.column_stack([border[:, 0] + np.sign(border[:, 0] - camera.cx) * 0.5,
                              border[:, 1] + np.sign(border[:, 1] - camera.cy) * 0.5])
    xy = camera.undistort_points(border)
    if not np.all(np.isfinite(xy)):
        raise CalibrationError(f"camera {camera.name!r}: the image border lies outside the lens model's one-to-one "
                               "range; the synthetic renderer needs every pixel to have a viewing ray")
    hull = cv2.convexHull(xy.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    limit = math.tan(camera.max_angle) * 0.999
    scale = min(FRUSTUM_MARGIN, limit / np.hypot(hull[:, 0], hull[:, 1]).max())
    hull = hull * scale
    rays = np.column_stack([hull, np.ones(len(hull))])
    normals = np.cross(rays, np.roll(rays, -1, axis=0))
    normals *= np.sign(normals[:, 2])[:, None]  # the optical axis (0, 0, 1) is inside
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return np.vstack([normals, [0.0, 0.0, 1.0]])


def _hull_vertices(planes: np.ndarray) -> np.ndarray:
    """Normalized-plane corners of the frustum (intersections of consecutive side planes)."""
    sides = planes[:-1]
    corners = np.cross(np.roll(sides, 1, axis=0), sides)
    return corners[:, :2] / corners[:, 2:3]
