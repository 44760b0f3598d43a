"""Pixel decoder registry: ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME`` names a class with ``from_config``."""
from __future__ import annotations

from torch import nn

from ...registry import Registry
from ..layers import ShapeSpec

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")


def build_pixel_decoder(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder; it must provide ``forward_features(features)``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = PIXEL_DECODER_REGISTRY.get(name).from_config(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(f"pixel decoder {name} has no forward_features method")
    return model
