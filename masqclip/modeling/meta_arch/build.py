"""Meta-architecture registry: ``MODEL.META_ARCHITECTURE`` names a class with ``from_config(cfg)``."""
from __future__ import annotations

from ...registry import Registry

META_ARCH_REGISTRY = Registry("META_ARCH")
