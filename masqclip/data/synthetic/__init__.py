"""The synthetic world of the embedded default: named things and stuff, rendered in real formats.

``generate_world(root, WorldConfig(...))`` writes ``<root>/synthetic``; ``categories`` holds the
category table that ``masqclip.data.datasets.synthetic`` registers as metadata.
"""
from .categories import ALL_CATEGORIES, STUFF_A, STUFF_B, THINGS, Category, things, world_categories
from .scene import SceneParams
from .world import WorldConfig, contiguous_ids, generate_world

__all__ = ["ALL_CATEGORIES", "STUFF_A", "STUFF_B", "THINGS", "Category", "SceneParams", "WorldConfig",
           "contiguous_ids", "generate_world", "things", "world_categories"]
