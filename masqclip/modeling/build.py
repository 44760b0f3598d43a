"""``build_model(cfg)``: the meta-architecture named by ``MODEL.META_ARCHITECTURE``, on its device.

No weights are loaded here: callers load ``MODEL.WEIGHTS`` with ``masqclip.checkpoint.load_checkpoint``.
"""
from __future__ import annotations

from torch import nn

from ..utils.env import resolve_device
from .meta_arch.build import META_ARCH_REGISTRY


def build_model(cfg) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` (randomly initialised) on ``resolve_device(cfg.MODEL.DEVICE)``."""
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE).from_config(cfg)
    return model.to(resolve_device(cfg.MODEL.DEVICE))
