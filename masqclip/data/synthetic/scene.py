"""Sampling and rendering of one synthetic image (a scene) or one captioned crop.

A scene is stuff regions (world A: warped Voronoi cells; world B: wavy horizontal bands) with 2-6
things painted over them in order, later things occluding earlier ones. A placement is accepted
only while every earlier thing keeps at least ``min_visible_fraction`` of its area, so annotations
(the visible parts) stay meaningful. All randomness comes from the ``numpy.random.Generator``
passed in, so a scene is a pure function of its seed.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import draw
from .categories import Category

REFERENCE_SIZE = 128  # texture periods in ``categories`` are given at this image size


@dataclass(frozen=True)
class Style:
    """How a world looks beyond its categories (world B differs from world A here)."""

    layout: str = "voronoi"  # voronoi | bands
    outline_width: int = 0  # dark outline of things, px at REFERENCE_SIZE (0 = none)
    light_gradient: float = 0.0  # illumination ramp amplitude (multiplies colours by 1 +- this)
    noise_std: float = 4.0  # per-pixel Gaussian noise, 0-255 scale


STYLES = {"a": Style(), "b": Style(layout="bands", outline_width=1, light_gradient=0.2, noise_std=7.0)}


@dataclass(frozen=True)
class SceneParams:
    """Sampling ranges of a scene; written to ``world.json`` with the generator's arguments."""

    image_size: int = 128  # image height; width = height x aspect
    aspect_range: tuple[float, float] = (0.8, 1.25)
    things_per_image: tuple[int, int] = (2, 5)
    stuff_per_image: tuple[int, int] = (2, 3)
    radius_range: tuple[float, float] = (0.12, 0.28)  # thing half-size, fraction of the short side
    stretch_range: tuple[float, float] = (0.8, 1.25)  # thing x-stretch
    min_visible_fraction: float = 0.5
    min_area: int = 24  # px: smallest visible thing
    placement_tries: int = 20
    hue_jitter: float = 8.0  # degrees
    sat_val_jitter: float = 0.08
    period_jitter: tuple[float, float] = (0.8, 1.25)
    secondary_sat: float = 0.55  # texture colour = primary with sat x this, val x secondary_val
    secondary_val: float = 0.4
    outline_darkness: float = 0.3
    boundary_wave: float = 0.06  # stuff boundary wave amplitude, fraction of the image height
    band_range: tuple[float, float] = (0.15, 0.85)  # world B: band boundaries, fraction of the height
    crop_radius_range: tuple[float, float] = (0.3, 0.45)  # CLIP crops: thing half-size / crop size
    # Texture periods x this in scenes. The CLIP branch sees a 128-px scene at its 64-px input, i.e.
    # halved; at 2 a scene's textures reach CLIP at the scale of the crops it was pre-trained on (at 1
    # they are half as coarse and MasQ mask tokens could go by hue alone, which novel things share).
    texture_scale: float = 2.0
    crop_zoom: float = 2.0  # CLIP crops: texture magnification relative to a 128-px scene at texture_scale 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Scene:
    """One rendered image with its ground truth.

    ``image``: uint8 [H, W, 3]; ``stuff``: int32 [H, W] stuff category id per pixel;
    ``things``: list of (category id, visible bool mask [H, W]), in painting order.
    """

    image: np.ndarray
    stuff: np.ndarray
    things: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def category_map(self) -> np.ndarray:
        """int32 [H, W]: dataset category id per pixel (things over stuff)."""
        out = self.stuff.copy()
        for cat_id, mask in self.things:
            out[mask] = cat_id
        return out


def _jittered_colors(rng: np.random.Generator, cat: Category, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    hue = cat.hue + rng.uniform(-p.hue_jitter, p.hue_jitter)
    sat = cat.sat + rng.uniform(-p.sat_val_jitter, p.sat_val_jitter)
    val = cat.val + rng.uniform(-p.sat_val_jitter, p.sat_val_jitter)
    return draw.hsv_color(hue, sat, val), draw.hsv_color(hue, sat * p.secondary_sat, val * p.secondary_val)


def _texture(rng: np.random.Generator, cat: Category, u: np.ndarray, v: np.ndarray, scale: float,
             p: SceneParams) -> np.ndarray:
    """float32 [H, W, 3] colours of ``cat``'s texture on frame coordinates (u, v)."""
    primary, secondary = _jittered_colors(rng, cat, p)
    period = cat.period * scale * rng.uniform(*p.period_jitter)
    return draw.mix_colors(draw.texture_weight(cat.texture, u, v, period, rng), primary, secondary)


def stuff_layer(rng: np.random.Generator, cat: Category, height: int, width: int, scale: float,
                p: SceneParams) -> np.ndarray:
    """float32 [H, W, 3]: ``cat``'s texture over a whole grid, randomly rotated (sky stays upright)."""
    angle = 0.0 if cat.texture in ("gradient", "planks") else rng.uniform(0, 2 * math.pi)
    u, v = draw.object_frame(height, width, rng.uniform(0, width), rng.uniform(0, height), angle)
    return _texture(rng, cat, u, v, scale, p)


def _stuff_labels(rng: np.random.Generator, ids: list[int], height: int, width: int, style: Style,
                  p: SceneParams) -> np.ndarray:
    """int32 [H, W]: which of ``ids`` covers each pixel; every id gets at least a seed/band."""
    yy = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(width, dtype=np.float32)[None, :] + 0.5
    amp, wavelength = p.boundary_wave * height, rng.uniform(0.4, 1.0) * width
    if style.layout == "bands":
        cuts = np.sort(rng.uniform(*p.band_range, len(ids) - 1)) * height
        edges = np.concatenate([cuts, [np.inf]])
        wavy_y = yy + amp * np.sin(2 * math.pi * xx / wavelength + rng.uniform(0, 2 * math.pi))
        band = (wavy_y[None] > edges[:-1, None, None]).sum(0) if len(ids) > 1 else np.zeros_like(wavy_y, int)
        return np.asarray(ids, np.int32)[band]
    seeds = rng.uniform([0, 0], [width, height], size=(len(ids), 2))
    wx = xx + amp * np.sin(2 * math.pi * yy / wavelength + rng.uniform(0, 2 * math.pi))
    wy = yy + amp * np.sin(2 * math.pi * xx / wavelength + rng.uniform(0, 2 * math.pi))
    dist = (wx[None] - seeds[:, 0, None, None]) ** 2 + (wy[None] - seeds[:, 1, None, None]) ** 2
    return np.asarray(ids, np.int32)[dist.argmin(0)]


def _paint_thing(canvas: np.ndarray, rng: np.random.Generator, cat: Category, mask: np.ndarray,
                 u: np.ndarray, v: np.ndarray, scale: float, style: Style, p: SceneParams) -> None:
    colors = _texture(rng, cat, u, v, scale, p)
    if style.outline_width:
        edge = draw.inner_boundary(mask, max(1, round(style.outline_width * scale)))
        colors[edge] *= p.outline_darkness
    canvas[mask] = colors[mask]


def _sample_thing(rng: np.random.Generator, cat: Category, height: int, width: int, short: int,
                  p: SceneParams) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]:
    """A random pose of ``cat``: its window in the image and, inside it, its mask and frame (u, v)."""
    radius = rng.uniform(*p.radius_range) * short
    cx, cy, angle = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0, 2 * math.pi)
    stretch = rng.uniform(*p.stretch_range)
    reach = radius * math.hypot(stretch, 1.0) + 1  # every shape fits in [-1, 1]^2 before rotation
    y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
    x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
    u, v = draw.object_frame(y1 - y0, x1 - x0, cx - x0, cy - y0, angle)
    return (slice(y0, y1), slice(x0, x1)), draw.shape_mask(cat.shape, u, v, radius, stretch), u, v


def _finish(canvas: np.ndarray, rng: np.random.Generator, style: Style) -> np.ndarray:
    h, w = canvas.shape[:2]
    if style.light_gradient:
        u, _ = draw.object_frame(h, w, w / 2, h / 2, rng.uniform(0, 2 * math.pi))
        canvas = canvas * (1.0 + style.light_gradient * (u / max(h, w) * 2.0))[..., None]
    canvas = canvas + style.noise_std * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, *, things: tuple[Category, ...], stuff: tuple[Category, ...],
                 style: Style, params: SceneParams, must_things: tuple[Category, ...] = (),
                 must_stuff: tuple[Category, ...] = ()) -> Scene:
    """Sample and render one scene.

    Args:
        rng: the only source of randomness.
        things / stuff: the categories to draw from (uniformly).
        style: the world's look; params: sampling ranges.
        must_things / must_stuff: categories drawn first (to cover every category in test sets).
    Returns:
        the ``Scene`` (image uint8 [H, W, 3], stuff ids, visible thing masks).
    """
    p = params
    height = p.image_size
    width = int(round(height * rng.uniform(*p.aspect_range)))
    scale = height / REFERENCE_SIZE * p.texture_scale
    n_stuff = int(rng.integers(p.stuff_per_image[0], p.stuff_per_image[1] + 1))
    rest = [c for c in stuff if c not in must_stuff]
    stuff_cats = list(must_stuff) + [rest[i] for i in rng.permutation(len(rest))[: max(0, n_stuff - len(must_stuff))]]
    labels = _stuff_labels(rng, [c.id for c in stuff_cats], height, width, style, p)
    canvas = np.zeros((height, width, 3), np.float32)
    for cat in stuff_cats:
        region = labels == cat.id
        canvas[region] = stuff_layer(rng, cat, height, width, scale, p)[region]

    n_things = int(rng.integers(p.things_per_image[0], p.things_per_image[1] + 1))
    chosen = list(must_things) + [things[i] for i in rng.integers(0, len(things), max(0, n_things - len(must_things)))]
    placed: list[list] = []  # [category id, visible mask, full area]
    short = min(height, width)
    for cat in chosen:
        for _ in range(p.placement_tries):
            window, local, u, v = _sample_thing(rng, cat, height, width, short, p)
            area = int(local.sum())
            if area < p.min_area:
                continue
            mask = np.zeros((height, width), bool)
            mask[window] = local
            kept = [int((vis & ~mask).sum()) for _, vis, _ in placed]
            if all(k >= max(p.min_visible_fraction * full, p.min_area) for k, (_, _, full) in zip(kept, placed)):
                for item in placed:
                    item[1] &= ~mask
                placed.append([cat.id, mask, area])
                _paint_thing(canvas[window], rng, cat, local, u, v, scale, style, p)
                break
    image = _finish(canvas, rng, style)
    return Scene(image=image, stuff=labels, things=[(cid, vis) for cid, vis, _ in placed])


def render_crop(rng: np.random.Generator, cat: Category, *, size: int, backgrounds: tuple[Category, ...],
                params: SceneParams) -> np.ndarray:
    """uint8 [size, size, 3]: one crop for CLIP pre-training.

    A thing is drawn large near the centre over a random stuff background (in a random world
    style); a stuff category fills the crop.
    """
    style = STYLES["a" if rng.random() < 0.5 else "b"]
    scale = size / REFERENCE_SIZE * params.crop_zoom  # crops are zoomed-in views: textures look larger
    if cat.isthing:
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        canvas = stuff_layer(rng, bg, size, size, scale, params)
        centre = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
        u, v = draw.object_frame(size, size, centre[0], centre[1], rng.uniform(0, 2 * math.pi))
        mask = draw.shape_mask(cat.shape, u, v, rng.uniform(*params.crop_radius_range) * size, rng.uniform(*params.stretch_range))
        _paint_thing(canvas, rng, cat, mask, u, v, scale, style, params)
    else:
        canvas = stuff_layer(rng, cat, size, size, scale, params)
    return _finish(canvas, rng, style)
