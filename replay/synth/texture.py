"""The ground as one periodic texture in world coordinates: asphalt, lane markings, curbs, sidewalks, grass.

Texture pixel (row, col) is the world ground point x = row * RESOLUTION (mod TEXTURE_PERIOD),
y = Y_MIN + col * RESOLUTION: rows run along the road, so an image row of a forward camera (roughly
constant x) reads one texture row. Colours are BGR in [0, 1] while painting; the texture is uint8 BGRA
(alpha unused: `cv2.remap` reads aligned 4-byte texels about 30 % faster than 3-byte ones).
"""

from __future__ import annotations

import cv2
import numpy as np

from replay.synth.world import (
    CROSSWALK_WIDTH, CROSSWALK_X, CURB_WIDTH, DASH_LENGTH, DASH_PERIOD, LANES_ONCOMING, LANES_SAME, LEFT_CURB,
    LEFT_EDGE, LEFT_SIDEWALK, MEDIAN, RIGHT_CURB, RIGHT_EDGE, RIGHT_SIDEWALK, TEXTURE_PERIOD,
)

RESOLUTION = 0.05   # m per texture pixel
Y_MIN, Y_MAX = -40.0, 40.0
LINE_WIDTH = 0.15
GROUND_SHADE = 0.9  # Lambert term of the flat ground under the default sun (applied to the texture)

ASPHALT = (0.36, 0.36, 0.37)
CONCRETE = (0.62, 0.64, 0.64)
CURB = (0.74, 0.75, 0.75)
GRASS = (0.22, 0.42, 0.34)
WHITE = (0.88, 0.88, 0.88)
YELLOW = (0.15, 0.70, 0.85)


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1], periodic along columns, with features about `cell` pixels large."""
    rows, cols = shape
    coarse = rng.uniform(-1.0, 1.0, (rows // cell + 2, max(cols // cell, 1))).astype(np.float32)
    coarse = np.concatenate([coarse, coarse[:, :1]], axis=1)  # wrap so the texture tiles along x
    big = cv2.resize(coarse, ((coarse.shape[1] - 1) * cell + 1, (coarse.shape[0] - 1) * cell + 1),
                     interpolation=cv2.INTER_CUBIC)
    return big[:rows, :cols]


def build_ground_texture(rng: np.random.Generator) -> np.ndarray:
    """uint8 BGRA [rows = x along the road, cols = lateral y] texture of one road period."""
    cols = int(round(TEXTURE_PERIOD / RESOLUTION))
    rows = int(round((Y_MAX - Y_MIN) / RESOLUTION))
    x = (np.arange(cols, dtype=np.float32) * RESOLUTION)[None, :]
    y = (Y_MIN + np.arange(rows, dtype=np.float32) * RESOLUTION)[:, None]
    colour = np.empty((rows, cols, 3), np.float32)
    colour[:] = GRASS
    on_road = (y >= RIGHT_CURB) & (y <= LEFT_CURB)
    curb = ((y >= RIGHT_CURB - CURB_WIDTH) & (y < RIGHT_CURB)) | ((y > LEFT_CURB) & (y <= LEFT_CURB + CURB_WIDTH))
    sidewalk = (((y >= RIGHT_SIDEWALK[0]) & (y <= RIGHT_SIDEWALK[1]))
                | ((y >= LEFT_SIDEWALK[0]) & (y <= LEFT_SIDEWALK[1])))
    joints = (np.abs(((x + 0.75) % 1.5) - 0.75) < 0.025)  # paving slab joints across the sidewalk
    for mask, c in ((on_road, ASPHALT), (curb, CURB), (sidewalk, CONCRETE)):
        colour[np.broadcast_to(mask, (rows, cols))] = c
    colour[np.broadcast_to(sidewalk & joints, (rows, cols))] *= 0.8

    shape = (rows, cols)
    grain = (0.05 * _value_noise(rng, shape, 40) + 0.03 * _value_noise(rng, shape, 8)
             + 0.025 * rng.standard_normal(shape, dtype=np.float32))
    grass_mix = 0.12 * _value_noise(rng, shape, 60)
    colour *= (1.0 + grain)[..., None]
    grass = np.broadcast_to(~(on_road | curb | sidewalk), shape)
    colour[grass] *= (1.0 + grass_mix[grass])[:, None]
    wear = np.ones_like(y)  # worn, darker tyre tracks
    for lane in LANES_SAME + LANES_ONCOMING:
        for track in (lane - 0.8, lane + 0.8):
            wear *= 1.0 - 0.06 * np.exp(-(((y - track) / 0.35) ** 2))
    colour *= wear[..., None]

    def paint(y_mask: np.ndarray, x_mask: np.ndarray | bool, c: tuple[float, float, float]) -> None:
        mask = np.broadcast_to(y_mask & x_mask, shape)
        colour[mask] = np.asarray(c, np.float32) * (1.0 + 0.5 * grain[mask])[:, None]

    crosswalk = np.abs(x - CROSSWALK_X) <= CROSSWALK_WIDTH / 2
    dashes = ((x % DASH_PERIOD) < DASH_LENGTH) & ~crosswalk
    for line_y in (RIGHT_EDGE, LEFT_EDGE):
        paint(np.abs(y - line_y) <= LINE_WIDTH / 2, ~crosswalk, WHITE)
    for line_y in ((LANES_SAME[0] + LANES_SAME[1]) / 2, (LANES_SAME[1] + LANES_SAME[2]) / 2,
                   (LANES_ONCOMING[0] + LANES_ONCOMING[1]) / 2):
        paint(np.abs(y - line_y) <= LINE_WIDTH / 2, dashes, WHITE)
    for offset in (-0.12, 0.12):
        paint(np.abs(y - (MEDIAN + offset)) <= 0.06, ~crosswalk, YELLOW)
    zebra = on_road & ((y - RIGHT_CURB) % 1.0 < 0.5)
    paint(zebra, crosswalk, WHITE)
    texture = np.clip(colour * (255.0 * GROUND_SHADE), 0, 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(texture.transpose(1, 0, 2)), cv2.COLOR_BGR2BGRA)


def texture_coordinates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (col, row) texture coordinates of world ground points: col from y, clamped to the texture;
    row from x, wrapped into one period."""
    period_px = TEXTURE_PERIOD / RESOLUTION
    col = np.clip((y - Y_MIN) / RESOLUTION, 0.0, (Y_MAX - Y_MIN) / RESOLUTION - 1.0)
    row = np.mod(x / RESOLUTION, period_px)
    return col.astype(np.float32), row.astype(np.float32)
