"""Backbone registry and builder: ``MODEL.BACKBONE.NAME`` names a function ``(cfg, input_shape)``."""
from __future__ import annotations

from torch import nn

from ...registry import Registry
from ..layers import ShapeSpec

BACKBONE_REGISTRY = Registry("BACKBONE")


class Backbone(nn.Module):
    """A feature extractor returning ``{name: [B, C, H/stride, W/stride]}``."""

    size_divisibility: int = 0

    def output_shape(self) -> dict[str, ShapeSpec]:
        raise NotImplementedError


def build_backbone(cfg, input_shape: ShapeSpec | None = None) -> Backbone:
    """Build ``cfg.MODEL.BACKBONE.NAME`` for an input of ``len(PIXEL_MEAN)`` channels."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN), stride=1)
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"{cfg.MODEL.BACKBONE.NAME} returned {type(backbone).__name__}, not a Backbone")
    return backbone
