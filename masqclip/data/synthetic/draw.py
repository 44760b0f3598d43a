"""Vectorised drawing primitives of the synthetic world: shapes, texture patterns, colours.

Everything works on whole pixel grids with numpy (no per-pixel Python loops). Coordinates follow
the image convention: ``x`` grows to the right, ``y`` downwards, pixel centres at ``+0.5``.
"""
from __future__ import annotations

import colorsys
import math
from typing import Callable

import numpy as np

# --------------------------------------------------------------------------------------------
# Shapes: inside tests on object-frame coordinates normalised so the shape fits in [-1, 1]^2.
# --------------------------------------------------------------------------------------------


def regular_polygon(sides: int, phase: float = -math.pi / 2) -> np.ndarray:
    """Vertices [sides, 2] of a regular polygon on the unit circle (first vertex at ``phase``)."""
    t = phase + 2 * math.pi * np.arange(sides) / sides
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def star_polygon(points: int, inner: float) -> np.ndarray:
    """Vertices [2 * points, 2] of a star whose inner vertices lie at radius ``inner``."""
    t = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def polygon_inside(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test.

    Args:
        x, y: float arrays of the same shape (points to test).
        vertices: [V, 2] polygon vertices in order (convex or not).
    Returns:
        bool array shaped like ``x``.
    """
    inside = np.zeros(x.shape, dtype=bool)
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1):
        if ay == by:
            continue
        crosses = (ay > y) != (by > y)
        x_at = ax + (y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (x < x_at)
    return inside


_CROSS = np.array([[-0.35, -1], [0.35, -1], [0.35, -0.35], [1, -0.35], [1, 0.35], [0.35, 0.35],
                   [0.35, 1], [-0.35, 1], [-0.35, 0.35], [-1, 0.35], [-1, -0.35], [-0.35, -0.35]])
_ARROW = np.array([[-1, -0.3], [0.15, -0.3], [0.15, -0.8], [1, 0], [0.15, 0.8], [0.15, 0.3], [-1, 0.3]])

SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda x, y: x * x + y * y <= 1.0,
    "ellipse": lambda x, y: x * x + (y / 0.6) ** 2 <= 1.0,
    "square": lambda x, y: (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8),
    "diamond": lambda x, y: np.abs(x) + np.abs(y) / 0.7 <= 1.0,
    "triangle": lambda x, y: polygon_inside(x, y, regular_polygon(3)),
    "pentagon": lambda x, y: polygon_inside(x, y, regular_polygon(5)),
    "hexagon": lambda x, y: polygon_inside(x, y, regular_polygon(6, phase=0.0)),
    "star": lambda x, y: polygon_inside(x, y, star_polygon(5, 0.45)),
    "cross": lambda x, y: polygon_inside(x, y, _CROSS),
    "arrow": lambda x, y: polygon_inside(x, y, _ARROW),
    "crescent": lambda x, y: (x * x + y * y <= 1.0) & ((x - 0.45) ** 2 + y * y > 0.7),
    "ring": lambda x, y: (x * x + y * y <= 1.0) & (x * x + y * y >= 0.55 ** 2),
}


def object_frame(height: int, width: int, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``height x width`` grid in a frame centred at (cx, cy),
    rotated by ``angle`` radians, in pixels.

    Returns:
        (u, v): float32 [height, width] each.
    """
    dy = np.arange(height, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(width, dtype=np.float32)[None, :] + 0.5 - cx
    c, s = math.cos(angle), math.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray, radius: float, aspect: float) -> np.ndarray:
    """bool [H, W]: pixels of ``shape`` with half-size ``radius`` px, x-axis stretched by ``aspect``."""
    return SHAPES[shape](u / (radius * aspect), v / radius)


# --------------------------------------------------------------------------------------------
# Textures: a mixing weight in [0, 1] per pixel (0 = primary colour, 1 = secondary colour).
# --------------------------------------------------------------------------------------------


def _smooth_noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid bilinearly upsampled to ``shape``."""
    h, w = shape
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    yy = np.arange(h, dtype=np.float32) / cell
    xx = np.arange(w, dtype=np.float32) / cell
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def texture_weight(kind: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Mixing weight float32 [H, W] in [0, 1] of texture ``kind`` on frame coordinates (u, v).

    Args:
        kind: one of ``TEXTURES``.
        u, v: float [H, W] pixel coordinates in the texture's (rotated) frame.
        period: pattern period in pixels.
        rng: randomness for the noise-based textures.
    """
    p = period
    if kind == "solid":
        w = np.zeros(u.shape, np.float32)
    elif kind == "stripes":
        w = np.mod(u, p) < p / 2
    elif kind == "checker":
        w = (np.floor(u / p) + np.floor(v / p)) % 2 == 1
    elif kind == "dots":
        w = (np.mod(u, p) - p / 2) ** 2 + (np.mod(v, p) - p / 2) ** 2 < (0.3 * p) ** 2
    elif kind == "rings":
        w = np.mod(np.sqrt(u * u + v * v), p) < p / 2
    elif kind == "waves":
        w = np.mod(v + 0.3 * p * np.sin(2 * math.pi * u / (1.5 * p)), p) < p / 2
    elif kind == "bricks":
        row = np.floor(v / p)
        w = (np.mod(v, p) < 1.2) | (np.mod(u + (row % 2) * p, 2 * p) < 1.2)
    elif kind == "planks":
        w = (np.mod(v, p) < 1.0) * 1.0 + 0.35 * _smooth_noise(u.shape, p / 3, rng) * (np.mod(v, p) >= 1.0)
    elif kind == "speckle":
        w = (rng.random(u.shape, dtype=np.float32) > 0.75) * 0.8
    elif kind == "noise":
        w = _smooth_noise(u.shape, p, rng)
    elif kind == "veins":
        w = np.abs(np.sin(2 * math.pi * (u / (3 * p) + 1.5 * _smooth_noise(u.shape, p, rng)))) ** 6
    elif kind == "gradient":
        w = np.clip((v - v.min()) / max(float(v.max() - v.min()), 1.0), 0, 1) * 0.6
    else:
        raise KeyError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}")
    return np.asarray(w, dtype=np.float32)


TEXTURES = ("solid", "stripes", "checker", "dots", "rings", "waves", "bricks", "planks",
            "speckle", "noise", "veins", "gradient")


def hsv_color(hue_deg: float, sat: float, val: float) -> np.ndarray:
    """float32 [3] RGB in 0-255 of an HSV colour (hue in degrees, wraps around)."""
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, float(np.clip(sat, 0, 1)), float(np.clip(val, 0, 1)))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def mix_colors(weight: np.ndarray, primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """float32 [H, W, 3]: per-pixel blend ``(1 - weight) * primary + weight * secondary``."""
    return primary + weight[..., None] * (secondary - primary)


def inner_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """bool [H, W]: pixels of ``mask`` within ``width`` px (4-neighbour steps) of its outside."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:, :] &= inner[:-1, :]
        shrunk[:-1, :] &= inner[1:, :]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        inner = shrunk
    return mask & ~inner
