"""The categories of the synthetic world: named things (base / novel) and two worlds of stuff.

A thing's identity is carried mainly by its appearance, a (hue, texture) pair, with its shape as
a secondary cue (docs/method.md#the-miniature: a tiny ViT learns colour + texture much faster than shape).
Each hue is used by at most two things, which then differ in texture; each novel thing shares its
hue with one base thing and its texture with another, so novel classes are new combinations of
seen attributes. Two pairs of base things share a hue (red, yellow), so telling base classes apart
already takes texture, the cue that separates a novel thing from its same-hue base thing: a
classifier tuned on base things alone (MasQ-Tuning) then learns what transfers to novel ones.
Stuff is less saturated than things and has its own textures. World A (the COCO role) and world B (the ADE20K role of the cross-dataset test) share the things but not the
stuff. Dataset ids: things 1..12, world A stuff 13..17, world B stuff 18..22.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Category:
    """One category. ``group``: ``base`` | ``novel`` (things), ``stuff_a`` | ``stuff_b`` (stuff).

    ``name`` may list synonyms separated by ", " (the text encoder averages them).
    Appearance: ``hue`` in degrees, ``sat``/``val`` in [0, 1], ``texture`` (see ``draw.TEXTURES``),
    ``period`` of the texture in pixels at 128 px image size, ``shape`` (things only).
    """

    id: int
    name: str
    group: str
    hue: float
    sat: float
    val: float
    texture: str
    period: float
    shape: str = ""

    @property
    def isthing(self) -> bool:
        return self.group in ("base", "novel")

    def to_dict(self) -> dict:
        return {**asdict(self), "isthing": int(self.isthing)}


_THING_SAT, _THING_VAL = 0.85, 0.92

THINGS: tuple[Category, ...] = (
    Category(1, "red dotted disc", "base", 0, _THING_SAT, _THING_VAL, "dots", 7, "circle"),
    Category(2, "orange striped box", "base", 30, _THING_SAT, _THING_VAL, "stripes", 6, "square"),
    Category(3, "yellow checkered wedge", "base", 58, _THING_SAT, _THING_VAL, "checker", 6, "triangle"),
    Category(4, "green ringed hexagon", "base", 120, _THING_SAT, _THING_VAL, "rings", 6, "hexagon"),
    Category(5, "blue wavy star", "base", 225, _THING_SAT, _THING_VAL, "waves", 7, "star"),
    Category(6, "purple plain cross", "base", 280, _THING_SAT, _THING_VAL, "solid", 6, "cross"),
    Category(7, "red striped egg", "base", 0, _THING_SAT, _THING_VAL, "stripes", 5, "ellipse"),
    Category(8, "yellow dotted diamond", "base", 58, _THING_SAT, _THING_VAL, "dots", 6, "diamond"),
    Category(9, "green striped pentagon", "novel", 120, _THING_SAT, _THING_VAL, "stripes", 6, "pentagon"),
    Category(10, "blue checkered crescent", "novel", 225, _THING_SAT, _THING_VAL, "checker", 6, "crescent"),
    Category(11, "orange wavy arrow", "novel", 30, _THING_SAT, _THING_VAL, "waves", 7, "arrow"),
    Category(12, "purple dotted ring", "novel", 280, _THING_SAT, _THING_VAL, "dots", 5, "ring"),
)

STUFF_A: tuple[Category, ...] = (
    Category(13, "grass", "stuff_a", 105, 0.45, 0.50, "speckle", 4),
    Category(14, "sand", "stuff_a", 42, 0.30, 0.80, "noise", 5),
    Category(15, "water", "stuff_a", 205, 0.45, 0.55, "waves", 9),
    Category(16, "brick wall, wall", "stuff_a", 12, 0.50, 0.50, "bricks", 8),
    Category(17, "gravel", "stuff_a", 30, 0.08, 0.55, "noise", 2),
)

STUFF_B: tuple[Category, ...] = (
    Category(18, "snow", "stuff_b", 210, 0.06, 0.95, "speckle", 4),
    Category(19, "wooden floor, floor", "stuff_b", 28, 0.55, 0.45, "planks", 7),
    Category(20, "sky", "stuff_b", 200, 0.35, 0.90, "gradient", 8),
    Category(21, "carpet", "stuff_b", 340, 0.45, 0.35, "checker", 3),
    Category(22, "marble", "stuff_b", 0, 0.02, 0.75, "veins", 6),
)

ALL_CATEGORIES: tuple[Category, ...] = THINGS + STUFF_A + STUFF_B
BY_ID: dict[int, Category] = {c.id: c for c in ALL_CATEGORIES}


def things(group: str = "all") -> tuple[Category, ...]:
    """Thing categories of ``group``: ``base`` | ``novel`` | ``all``."""
    if group == "all":
        return THINGS
    if group not in ("base", "novel"):
        raise KeyError(f"unknown thing group {group!r}: expected base, novel or all")
    return tuple(c for c in THINGS if c.group == group)


def world_categories(world: str) -> tuple[Category, ...]:
    """All categories of world ``"a"`` or ``"b"`` (things, then that world's stuff), by dataset id."""
    stuff = {"a": STUFF_A, "b": STUFF_B}
    if world not in stuff:
        raise KeyError(f"unknown world {world!r}: expected 'a' or 'b'")
    return THINGS + stuff[world]
