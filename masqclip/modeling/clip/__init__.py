"""CLIP side of MasQCLIP: open_clip models (``factory``), mask class tokens (``vit_masq``),
vocabularies and cached text embeddings (``text``), and contrastive pre-training of our tiny CLIP
(``pretrain``). Importing this package loads neither open_clip nor any weights."""
from .factory import (ClipActivationMismatch, ClipWeightsUnavailable, canonical_model_name, clip_mean_std, create_clip,
                      create_clip_from_config, get_tokenizer, register_model_configs, weights_identity)
from .vit_masq import MasQCLIP, masks_to_visibility

__all__ = [
    "ClipActivationMismatch", "ClipWeightsUnavailable", "MasQCLIP", "canonical_model_name", "clip_mean_std", "create_clip",
    "create_clip_from_config", "get_tokenizer", "masks_to_visibility", "register_model_configs",
    "weights_identity",
]
