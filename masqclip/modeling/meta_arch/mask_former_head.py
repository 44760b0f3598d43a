"""``sem_seg_head``: composes the pixel decoder and the transformer decoder (``predictor``)."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ShapeSpec
from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder


class MaskFormerHead(nn.Module):
    """Pixel decoder -> multi-scale features -> masked-attention decoder predictions."""

    def __init__(self, *, pixel_decoder: nn.Module, predictor: nn.Module, num_classes: int, ignore_value: int,
                 loss_weight: float = 1.0):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> "MaskFormerHead":
        head = cfg.MODEL.SEM_SEG_HEAD
        if cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE != "multi_scale_pixel_decoder":
            raise ValueError("only MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE 'multi_scale_pixel_decoder' is supported")
        return cls(pixel_decoder=build_pixel_decoder(cfg, input_shape),
                   predictor=build_transformer_decoder(cfg, in_channels=head.CONVS_DIM, mask_classification=True),
                   num_classes=head.NUM_CLASSES, ignore_value=head.IGNORE_VALUE, loss_weight=head.LOSS_WEIGHT)

    def forward(self, features: dict[str, torch.Tensor], aux_masks: bool | None = None) -> dict:
        """Args:
            features: backbone outputs {resK: [B, C_k, H/s_k, W/s_k]}.
            aux_masks: see ``MultiScaleMaskedTransformerDecoder.forward``.
        Returns:
            the decoder's {"pred_logits": [B, Q, 2], "pred_masks": [B, Q, H/4, W/4], "aux_outputs": [...]}.
        """
        mask_features, _, multi_scale = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale, mask_features, aux_masks=aux_masks)
