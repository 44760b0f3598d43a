"""Sine position encoding over a feature map (DETR style, normalised coordinates)."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

# Frequencies are temperature ** (2 * (i // 2) / num_pos_feats), as in DETR / Mask2Former.
DEFAULT_TEMPERATURE = 10000
DEFAULT_EPS = 1e-6
# Sizes whose encoding inference keeps (a 1024 px input's largest level map is 16 MiB).
POSITION_CACHE_SIZE = 8


class PositionEmbeddingSine(nn.Module):
    """``num_pos_feats`` sine/cosine features per axis (y first, then x): 2 * num_pos_feats channels."""

    def __init__(self, *, num_pos_feats: int = 64, temperature: int = DEFAULT_TEMPERATURE, normalize: bool = True,
                 scale: float | None = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # inference: (h, w, device, dtype) -> map

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: [B, C, H, W] (only its shape, device and dtype are used).
            mask: optional bool [B, H, W], True = padding.
        Returns:
            [B, 2 * num_pos_feats, H, W] in x's dtype. Without a mask and without autograd, a cached
            map of this size (channels-last, so its flattened [B, H*W, C] form is contiguous),
            expanded over the batch: read-only.
        """
        if mask is None and not torch.is_grad_enabled():
            key = (x.shape[2], x.shape[3], x.device, x.dtype)
            pos = self._cache.get(key)
            if pos is None:
                pos = self.encode(x[:1]).contiguous(memory_format=torch.channels_last)
                self._cache[key] = pos
                while len(self._cache) > POSITION_CACHE_SIZE:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            return pos.expand(x.shape[0], -1, -1, -1)
        return self.encode(x, mask)

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoding itself (``forward`` without the cache)."""
        b, _, h, w = x.shape
        if mask is None:
            not_mask = torch.ones((b, h, w), device=x.device, dtype=torch.float32)
        else:
            not_mask = (~mask).float()
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            y_embed = y_embed / (y_embed[:, -1:, :] + DEFAULT_EPS) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + DEFAULT_EPS) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)
