"""Meta-architectures; importing this package registers them in ``META_ARCH_REGISTRY``."""
from .build import META_ARCH_REGISTRY
from .mask_former import MaskFormer, build_criterion
from .mask_former_head import MaskFormerHead
from .mask_distill import MaskDistill  # after MaskFormer, its base class; registers "MaskDistill"
from .masq_tuning import MasQTuning  # after MaskFormer, its base class; registers "MasQTuning"

__all__ = ["META_ARCH_REGISTRY", "MaskDistill", "MaskFormer", "MasQTuning", "MaskFormerHead", "build_criterion"]
