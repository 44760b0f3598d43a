"""Transformer decoder registry: ``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`` names a class."""
from __future__ import annotations

from torch import nn

from ...registry import Registry

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Build the decoder that turns multi-scale pixel features into per-query class and mask logits."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name).from_config(cfg, in_channels, mask_classification)
