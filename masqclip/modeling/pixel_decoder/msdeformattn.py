"""Mask2Former's pixel decoder: a deformable-attention encoder over res3-res5 plus an FPN step to res2.

Parameter names match the official checkpoints (``input_proj.{i}.{0,1}``, ``transformer.level_embed``,
``transformer.encoder.layers.N.*``, ``mask_features``, ``adapter_1``, ``layer_1``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import GN_NUM_GROUPS, Conv2d, ShapeSpec, c2_xavier_fill, get_norm
from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .build import PIXEL_DECODER_REGISTRY
from .ms_deform_attn import MSDeformAttn

# Number of decoder-facing scales the transformer decoder attends to (res5, res4, res3).
MASKFORMER_NUM_FEATURE_LEVELS = 3


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention -> add & norm -> ReLU FFN -> add & norm."""

    def __init__(self, *, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model=d_model, n_levels=n_levels, n_heads=n_heads, n_points=n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: list[tuple[int, int]], padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: src, pos [B, S, C]; reference_points [B, S, L, 2]. Returns: [B, S, C]."""
        if not (torch.is_grad_enabled() or self.training):
            # inference (dropout off): residual adds and ReLU in place, no dropout calls
            attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
            src = self.norm1(attn.add_(src))
            ffn = self.linear2(F.relu_(self.linear1(src)))
            return self.norm2(ffn.add_(src))
        src = self.norm1(src + self.dropout1(self.self_attn(src + pos, reference_points, src, spatial_shapes,
                                                             padding_mask)))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnEncoder(nn.Module):
    """A stack of ``MSDeformAttnEncoderLayer`` (module list ``layers``)."""

    def __init__(self, *, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([MSDeformAttnEncoderLayer(**layer_kwargs) for _ in range(num_layers)])

    @staticmethod
    def get_reference_points(spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
        """Pixel centres of every level, normalised by the valid (unpadded) extent.

        Args:
            spatial_shapes: [(H_l, W_l)].
            valid_ratios: [B, L, 2] (x, y) fraction of each level that is not padding.
        Returns:
            [B, S, L, 2] reference points (x, y), S = sum H_l * W_l.
        """
        refs = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=valid_ratios.dtype, device=valid_ratios.device),
                torch.linspace(0.5, w - 0.5, w, dtype=valid_ratios.dtype, device=valid_ratios.device),
                indexing="ij")
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(refs, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, src: torch.Tensor, spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor,
                pos: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: src, pos [B, S, C]; valid_ratios [B, L, 2]. Returns: [B, S, C]."""
        reference_points = self.get_reference_points(spatial_shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, padding_mask)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds ``level_embed`` to the position encoding and runs the encoder."""

    def __init__(self, *, d_model: int, nhead: int, num_encoder_layers: int, dim_feedforward: int, dropout: float,
                 num_feature_levels: int, enc_n_points: int):
        super().__init__()
        self.d_model = d_model
        self.encoder = MSDeformAttnEncoder(num_layers=num_encoder_layers, d_model=d_model, d_ffn=dim_feedforward,
                                           dropout=dropout, n_levels=num_feature_levels, n_heads=nhead,
                                           n_points=enc_n_points)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask: torch.Tensor) -> torch.Tensor:
        """Args: mask bool [B, H, W] (True = padding). Returns: [B, 2] valid (x, y) fractions."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
        valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
        return torch.stack([valid_w / w, valid_h / h], -1)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor],
                masks: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Args:
            srcs, pos_embeds: per level [B, C, H_l, W_l].
            masks: optional per level bool [B, H_l, W_l] (True = padding); None = no padding.
        Returns:
            memory [B, S, C] (levels concatenated in input order) and the [(H_l, W_l)] list.
        """
        spatial_shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flatten = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                                 for lvl, p in enumerate(pos_embeds)], 1).to(src_flatten.dtype)
        if masks is None:
            padding_mask = None
            valid_ratios = torch.ones(srcs[0].shape[0], len(srcs), 2, device=src_flatten.device,
                                      dtype=src_flatten.dtype)
        else:
            padding_mask = torch.cat([m.flatten(1) for m in masks], 1)
            valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1).to(src_flatten.dtype)
        memory = self.encoder(src_flatten, spatial_shapes, valid_ratios, pos_flatten, padding_mask)
        return memory, spatial_shapes


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable encoder over the coarse levels, then FPN upsampling to ``common_stride``."""

    def __init__(self, *, input_shape: dict[str, ShapeSpec], transformer_in_features: list[str], conv_dim: int,
                 mask_dim: int, norm: str, common_stride: int, transformer_dropout: float, transformer_nheads: int,
                 transformer_dim_feedforward: int, transformer_enc_layers: int, transformer_n_points: int):
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in shapes]
        feature_channels = [v.channels for _, v in shapes]
        tr_shapes = sorted(((k, v) for k, v in input_shape.items() if k in transformer_in_features),
                           key=lambda kv: kv[1].stride)
        self.transformer_in_features = [k for k, _ in tr_shapes]
        self.transformer_feature_strides = [v.stride for _, v in tr_shapes]
        self.transformer_num_feature_levels = len(self.transformer_in_features)
        # Coarsest first: input_proj.0 projects res5.
        self.input_proj = nn.ModuleList()
        for _, spec in reversed(tr_shapes):
            self.input_proj.append(nn.Sequential(nn.Conv2d(spec.channels, conv_dim, kernel_size=1),
                                                 nn.GroupNorm(GN_NUM_GROUPS, conv_dim)))
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim, nhead=transformer_nheads, num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward, dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels, enc_n_points=transformer_n_points)
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = MASKFORMER_NUM_FEATURE_LEVELS
        self.common_stride = common_stride
        min_stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(common_stride))
        self.lateral_convs, self.output_convs = [], []
        use_bias = norm == ""
        for idx, in_channels in enumerate(feature_channels[:self.num_fpn_levels]):
            lateral = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        # Finest first, for the top-down loop.
        self.lateral_convs = self.lateral_convs[::-1]
        self.output_convs = self.output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> "MSDeformAttnPixelDecoder":
        head = cfg.MODEL.SEM_SEG_HEAD
        return cls(
            input_shape={k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            transformer_in_features=list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            conv_dim=head.CONVS_DIM, mask_dim=head.MASK_DIM, norm=head.NORM, common_stride=head.COMMON_STRIDE,
            transformer_dropout=cfg.MODEL.MASK_FORMER.DROPOUT,
            transformer_nheads=head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
            transformer_dim_feedforward=head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            transformer_enc_layers=head.TRANSFORMER_ENC_LAYERS,
            transformer_n_points=head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS)

    def forward_features(self, features: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Args:
            features: backbone outputs {resK: [B, C_k, H/s_k, W/s_k]}.
        Returns:
            mask_features [B, mask_dim, H/common_stride, W/common_stride],
            the encoder's coarsest output [B, conv_dim, H/32, W/32],
            multi-scale features for the transformer decoder: 3 maps [B, conv_dim, H_l, W_l], coarsest first.
        """
        srcs, pos = [], []
        for idx, name in enumerate(reversed(self.transformer_in_features)):
            x = self.input_proj[idx](features[name])
            srcs.append(x)
            pos.append(self.pe_layer(x))
        memory, spatial_shapes = self.transformer(srcs, pos)
        b = memory.shape[0]
        out, start = [], 0
        for h, w in spatial_shapes:
            if torch.is_grad_enabled():
                out.append(memory[:, start:start + h * w].transpose(1, 2).reshape(b, -1, h, w))
            else:
                # the same channels-last view with its true batch stride: bilinear resizing reads it
                # as channels-last (the reshaped view made it copy its input and output, ~0.25 s at 1024 px)
                out.append(memory[:, start:start + h * w].view(b, h, w, -1).permute(0, 3, 1, 2))
            start += h * w
        for idx, name in enumerate(self.in_features[:self.num_fpn_levels][::-1]):
            cur = self.lateral_convs[idx](features[name])
            y = cur + F.interpolate(out[-1], size=cur.shape[-2:], mode="bilinear", align_corners=False)
            out.append(self.output_convs[idx](y))
        multi_scale = out[:self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale
