"""Mask2Former's multi-scale masked-attention transformer decoder (official parameter names).

Rounds over the three pixel-decoder scales from the coarsest; every layer is masked cross-attention
-> self-attention -> FFN (post-norm). The cross-attention mask of a layer is the previous
prediction's mask resized to that layer's scale: a location is hidden where sigmoid(mask) < 0.5,
and a query whose whole row would be hidden sees everything.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Conv2d, c2_xavier_fill
from .attention import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .build import TRANSFORMER_DECODER_REGISTRY
from .position_encoding import PositionEmbeddingSine

# The class head scores object vs no-object only; vocabulary classes come from CLIP
# (docs/method.md#stage-a-the-teacher).
NUM_CLASS_OUTPUTS = 2
NUM_FEATURE_LEVELS = 3
MASK_EMBED_LAYERS = 3


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learnable queries refined by ``dec_layers`` masked-attention layers; a prediction after each."""

    def __init__(self, *, in_channels: int, hidden_dim: int, num_queries: int, nheads: int, dim_feedforward: int,
                 dec_layers: int, mask_dim: int, dropout: float = 0.0, pre_norm: bool = False,
                 enforce_input_project: bool = False, mask_classification: bool = True):
        super().__init__()
        if pre_norm:
            raise ValueError("MODEL.MASK_FORMER.PRE_NORM True is not supported (the paper models are post-norm)")
        if not mask_classification:
            raise ValueError("the decoder always classifies masks (object / no-object)")
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries
        self.num_feature_levels = NUM_FEATURE_LEVELS
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d_model=hidden_dim, nhead=nheads, dropout=dropout) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(d_model=hidden_dim, nhead=nheads, dropout=dropout) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(d_model=hidden_dim, dim_feedforward=dim_feedforward, dropout=dropout) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, NUM_CLASS_OUTPUTS)
        self.mask_embed = MLP(input_dim=hidden_dim, hidden_dim=hidden_dim, output_dim=mask_dim,
                              num_layers=MASK_EMBED_LAYERS)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool = True
                    ) -> "MultiScaleMaskedTransformerDecoder":
        mf = cfg.MODEL.MASK_FORMER
        if mf.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {mf.DEC_LAYERS}")
        return cls(in_channels=in_channels, hidden_dim=mf.HIDDEN_DIM, num_queries=mf.NUM_OBJECT_QUERIES,
                   nheads=mf.NHEADS, dim_feedforward=mf.DIM_FEEDFORWARD,
                   dec_layers=mf.DEC_LAYERS - 1,  # DEC_LAYERS counts the learnable-query prediction too
                   mask_dim=cfg.MODEL.SEM_SEG_HEAD.MASK_DIM, dropout=mf.DROPOUT, pre_norm=mf.PRE_NORM,
                   enforce_input_project=mf.ENFORCE_INPUT_PROJ, mask_classification=mask_classification)

    def forward(self, x: list[torch.Tensor], mask_features: torch.Tensor, mask: torch.Tensor | None = None,
                aux_masks: bool | None = None) -> dict:
        """Args:
            x: 3 pixel-decoder maps [B, C, H_l, W_l], coarsest first.
            mask_features: [B, mask_dim, H/4, W/4].
            mask: unused (kept for the detectron2 call signature).
            aux_masks: compute full-resolution masks of the intermediate predictions (needed for deep
                supervision). Default: ``self.training``. Without them ``aux_outputs`` carry
                ``pred_masks=None``.
        Returns:
            {"pred_logits": [B, Q, 2], "pred_masks": [B, Q, H/4, W/4],
             "aux_outputs": [{"pred_logits", "pred_masks"}] * dec_layers (all predictions but the last)}.
        """
        del mask
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature maps, got {len(x)}")
        aux_masks = self.training if aux_masks is None else aux_masks
        b = mask_features.shape[0]
        src, pos, sizes, level_mask_features = [], [], [], []
        for i, feat in enumerate(x):
            sizes.append(tuple(feat.shape[-2:]))
            pos.append(self.pe_layer(feat).flatten(2).transpose(1, 2))
            src.append(self.input_proj[i](feat).flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None])
            # Bilinear resizing is linear, so resizing mask_features once per level and projecting
            # there equals projecting at full resolution and resizing each prediction's masks.
            level_mask_features.append(F.interpolate(mask_features, size=sizes[-1], mode="bilinear",
                                                     align_corners=False))
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        output = self.query_feat.weight[None].expand(b, -1, -1)
        classes, masks = [], []
        for i in range(self.num_layers + 1):
            if i > 0:
                level = (i - 1) % self.num_feature_levels
                output = self.transformer_cross_attention_layers[i - 1](output, src[level], pos[level], query_pos,
                                                                        attn_mask)
                output = self.transformer_self_attention_layers[i - 1](output, query_pos)
                output = self.transformer_ffn_layers[i - 1](output)
            last = i == self.num_layers
            decoded = self.decoder_norm(output)
            classes.append(self.class_embed(decoded))
            mask_embed = self.mask_embed(decoded)
            masks.append(torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features) if (last or aux_masks) else None)
            if not last:
                attn_mask = self.attention_mask(mask_embed, level_mask_features[i % self.num_feature_levels])
        return {"pred_logits": classes[-1], "pred_masks": masks[-1],
                "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])]}

    @staticmethod
    def attention_mask(mask_embed: torch.Tensor, level_mask_features: torch.Tensor) -> torch.Tensor:
        """Where each query may look at the next level.

        Args:
            mask_embed: [B, Q, C]; level_mask_features: [B, C, h, w] mask features resized to the level.
        Returns:
            bool [B, 1, Q, h * w], True = visible (sigmoid(mask) >= 0.5, i.e. logit >= 0); a row with
            nothing visible is made fully visible.
        """
        logits = torch.einsum("bqc,bchw->bqhw", mask_embed.detach(), level_mask_features.detach()).flatten(2)
        visible = logits >= 0
        visible = visible | ~visible.any(-1, keepdim=True)
        return visible[:, None]
