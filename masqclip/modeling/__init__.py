"""Models: ``build_model(cfg)`` and the registries of every component kind.

Importing ``meta_arch`` registers the meta-architectures (MaskFormer, and those added beside it).
"""
from . import meta_arch  # noqa: F401  (registers meta-architectures)
from .backbone import BACKBONE_REGISTRY, build_backbone
from .build import build_model
from .meta_arch import META_ARCH_REGISTRY
from .pixel_decoder import PIXEL_DECODER_REGISTRY
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY

__all__ = ["BACKBONE_REGISTRY", "META_ARCH_REGISTRY", "PIXEL_DECODER_REGISTRY", "TRANSFORMER_DECODER_REGISTRY",
           "build_backbone", "build_model"]
