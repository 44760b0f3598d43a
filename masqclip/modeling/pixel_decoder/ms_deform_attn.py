"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch via ``F.grid_sample``.

With autograd, the sampling core runs one ``grid_sample`` per feature level for all heads, queries
and points at once, on channels-last values, and applies the attention weights as one accumulation.
Without autograd (inference) it is one weighted gather instead: each (query, head) sums its
levels x points x 4 bilinear taps, weight = attention weight x bilinear weight, with
``F.embedding_bag`` over the value rows (no [heads, channels, points, queries] sample tensor is
written and read back). Works on CPU and CUDA, in any float dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn_core(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                        sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Weighted bilinear sampling of multi-level value maps.

    Args:
        value: [B, S, M, D] values of all levels flattened (S = sum of H_l * W_l), M heads of D channels.
        spatial_shapes: [(H_l, W_l)] per level, in the order the levels are flattened in ``value``.
        sampling_locations: [B, Lq, M, L, P, 2] (x, y) in [0, 1] image-relative coordinates.
        attention_weights: [B, Lq, M, L, P], normalised over (L, P) per head.
    Returns:
        [B, Lq, M * D].
    """
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (value, sampling_locations, attention_weights))):
        return gathered_deform_attn_core(value, spatial_shapes, sampling_locations, attention_weights)
    b, s, m, d = value.shape
    lq, n_levels, n_points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    # grid_sample wants (x, y) in [-1, 1]; align_corners=False puts pixel centres at (i + 0.5) / size.
    # Points-major grids [B*M, L, P, Lq, 2]: a level's samples come out as [B*M, D, P, Lq], so the
    # weighted sum over points adds whole contiguous [D, Lq] planes (a reduction over the last,
    # 4-long axis is several times slower than the sampling itself).
    grids = (2 * sampling_locations - 1).permute(0, 2, 3, 4, 1, 5).reshape(b * m, n_levels, n_points, lq, 2)
    weights = attention_weights.permute(0, 2, 3, 4, 1).reshape(b * m, 1, n_levels, n_points, lq)
    # Channels-last per head: each bilinear tap reads D contiguous values. [B*M, S, D]
    value = value.transpose(1, 2).reshape(b * m, s, d)
    out = None
    start = 0
    for lvl, (h, w) in enumerate(spatial_shapes):
        value_l = value[:, start:start + h * w].view(b * m, h, w, d).permute(0, 3, 1, 2)  # [B*M, D, H, W] (NHWC)
        start += h * w
        # all heads (batch), points (rows) and queries (columns) of this level in one call: [B*M, D, P, Lq]
        sampled = F.grid_sample(value_l, grids[:, lvl], mode="bilinear", padding_mode="zeros", align_corners=False)
        # autograd: the per-point accumulation with a hand-written backward (autograd of it would
        # back-propagate a zero-filled copy of ``sampled`` per point)
        weighted = _WeightedPointSum.apply(sampled, weights[:, 0, lvl])
        out = weighted if out is None else out + weighted
    return out.reshape(b, m * d, lq).transpose(1, 2)


class _WeightedPointSum(torch.autograd.Function):
    """``out = sum_p sampled[:, :, p] * weights[:, None, p]`` without the [N, D, P, Lq] product.

    Forward accumulates point by point into one [N, D, Lq] tensor; backward writes the gradient of
    ``sampled`` once (what grid_sample's backward reads) and that of ``weights`` as a reduction
    over D per point. The same sums as ``(sampled * weights[:, None]).sum(2)`` up to float
    re-association.
    """

    @staticmethod
    def forward(ctx, sampled: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Args: sampled [N, D, P, Lq]; weights [N, P, Lq]. Returns: [N, D, Lq]."""
        ctx.save_for_backward(sampled, weights)
        out = sampled[:, :, 0] * weights[:, None, 0]
        for p in range(1, sampled.shape[2]):
            out.addcmul_(sampled[:, :, p], weights[:, None, p])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        sampled, weights = ctx.saved_tensors
        grad_sampled = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_sampled = grad_out[:, :, None] * weights[:, None]
        if ctx.needs_input_grad[1]:
            grad_weights = torch.stack([torch.linalg.vecdot(sampled[:, :, p], grad_out, dim=1)
                                        for p in range(sampled.shape[2])], 1)
        return grad_sampled, grad_weights


# Zero border of each level's value map in the gathered core: 1 row / column before, 2 after, so
# that a tap of a location clamped to [-1, size] is always a row of the table (pixel -1, size or
# size + 1 hold zeros, as grid_sample's padding_mode="zeros").
_PAD_BEFORE, _PAD_AFTER = 1, 2


def gathered_deform_attn_core(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                              sampling_locations: torch.Tensor | None, attention_weights: torch.Tensor, *,
                              pixel_xy: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``ms_deform_attn_core`` as one weighted gather (no autograd; same arguments and result).

    ``pixel_xy`` may replace ``sampling_locations``: the pixel coordinates (x, y) = location *
    (W, H) - 0.5 of each level, each [B, Lq, M, L, P] contiguous (overwritten).

    Each (image, query, head) is a bag of 4 bilinear taps x levels x points; a tap is a row
    (pixel, head) of the zero-bordered value table, its weight the attention weight times the
    bilinear weight of ``grid_sample(align_corners=False)`` (pixel x = location * W - 0.5).
    Locations are clamped to [-1, size] per axis first: a clamped point's taps land on the zero
    border, as grid_sample's out-of-range taps read zeros, so the sum is unchanged (float
    re-association only). Per-level constants are laid out [L, P] so that every element-wise
    pass runs over contiguous (level, point) rows.
    """
    b, s, m, d = value.shape
    lq, _, n_levels, n_points = attention_weights.shape[1:]
    # at least fp32 (bf16 coordinates would be off by up to half a pixel; grid_sample autocasts to fp32 too)
    dtype, device = torch.promote_types(value.dtype, torch.float32), value.device
    pad = _PAD_BEFORE + _PAD_AFTER
    # the table: every level's [B, H+3, W+3, M, D] map with a zero border; rows (level, image, y, x, head)
    level_rows = [b * (h + pad) * (w + pad) * m for h, w in spatial_shapes]
    table = value.new_zeros((sum(level_rows), d), dtype=dtype)
    first_row, start, row = [], 0, 0
    for (h, w), rows in zip(spatial_shapes, level_rows):
        table[row:row + rows].view(b, h + pad, w + pad, m, d)[:, _PAD_BEFORE:_PAD_BEFORE + h,
                                                              _PAD_BEFORE:_PAD_BEFORE + w].copy_(
            value[:, start:start + h * w].view(b, h, w, m, d))
        first_row.append(row + (_PAD_BEFORE * (w + pad) + _PAD_BEFORE) * m)  # row of pixel (0, 0), head 0
        start += h * w
        row += rows

    def per_level(values: list, dtype) -> torch.Tensor:  # [L, P] constant
        return torch.tensor(values, dtype=dtype, device=device)[:, None].expand(n_levels, n_points).contiguous()

    widths = per_level([float(w) for _, w in spatial_shapes], dtype)
    heights = per_level([float(h) for h, _ in spatial_shapes], dtype)
    if pixel_xy is None:  # pixel coordinates [B, Lq, M, L, P]
        x = torch.mul(sampling_locations[..., 0], widths).sub_(0.5)
        y = torch.mul(sampling_locations[..., 1], heights).sub_(0.5)
    else:
        x, y = pixel_xy
    minus_one = torch.full((), -1.0, dtype=dtype, device=device)
    torch.fmax(x, minus_one, out=x)  # fmax: a NaN coordinate becomes -1 (zero taps, as grid_sample's)
    torch.fmax(y, minus_one, out=y)
    torch.minimum(x, widths, out=x)
    torch.minimum(y, heights, out=y)
    x0, y0 = x.floor(), y.floor()
    # bilinear weights per axis and tap [B, Lq, M, 2, L, P]; the attention weight rides on y
    wx = torch.empty((b, lq, m, 2, n_levels, n_points), dtype=dtype, device=device)
    wy = torch.empty_like(wx)
    torch.sub(x, x0, out=wx[:, :, :, 1])
    torch.sub(torch.ones((), dtype=dtype, device=device), wx[:, :, :, 1], out=wx[:, :, :, 0])
    torch.mul(y.sub_(y0), attention_weights, out=wy[:, :, :, 1])
    torch.sub(attention_weights, wy[:, :, :, 1], out=wy[:, :, :, 0])
    weight = wy[:, :, :, :, None] * wx[:, :, :, None]  # [B, Lq, M, 2 (y tap), 2 (x tap), L, P]
    # row of tap (y0 + i, x0 + j) of head k, image n: first_row + ((n * hp + y0 + i) * wp + x0 + j) * m + k
    index_dtype = torch.int32 if table.shape[0] < 2 ** 31 else torch.int64  # int32: half the index traffic
    row_stride = per_level([(w + pad) * m for _, w in spatial_shapes], index_dtype)
    base = (per_level(first_row, index_dtype)
            + torch.arange(m, dtype=index_dtype, device=device).view(m, 1, 1)
            + torch.arange(b, dtype=index_dtype, device=device).view(b, 1, 1, 1)
            * per_level([(h + pad) * (w + pad) * m for h, w in spatial_shapes], index_dtype))  # [B, M, L, P]
    # y0 * row_stride + x0 * m in floats (exact: integers below 2 ** 24 within one image's level)
    first = torch.addcmul(x0.mul_(m), y0, row_stride.to(dtype)).to(index_dtype).add_(base[:, None])
    corner = torch.stack((torch.zeros_like(row_stride), torch.full_like(row_stride, m),
                          row_stride, row_stride + m)).view(2, 2, n_levels, n_points)
    index = first[:, :, :, None, None] + corner  # [B, Lq, M, 2, 2, L, P]
    n = b * lq * m
    out = F.embedding_bag(index.view(n, -1), table, per_sample_weights=weight.view(n, -1), mode="sum")
    return out.view(b, lq, m * d)


class MSDeformAttn(nn.Module):
    """Deformable attention over ``n_levels`` feature maps, ``n_heads`` heads, ``n_points`` points.

    Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``)
    and initialisation follow Deformable DETR.
    """

    def __init__(self, *, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Offsets start on a ring of ``n_heads`` directions, point k at distance k; uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, input_flatten: torch.Tensor,
                spatial_shapes: list[tuple[int, int]], input_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            query: [B, Lq, C] (with position embedding added).
            reference_points: [B, Lq, L, 2] (x, y) in [0, 1] per level.
            input_flatten: [B, S, C] the multi-level input, levels flattened and concatenated.
            spatial_shapes: [(H_l, W_l)] per level.
            input_padding_mask: optional bool [B, S], True = padding (its values are zeroed).
        Returns:
            [B, Lq, C].
        """
        b, lq, _ = query.shape
        s = input_flatten.shape[1]
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(b, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(b, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(b, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(b, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] != 2:
            raise ValueError(f"reference_points must be [B, Lq, L, 2] points, got {tuple(reference_points.shape)}")
        if not torch.is_grad_enabled():
            # inference: pixel coordinates straight from the offsets (x = ref * W - 0.5 + offset_x)
            sizes = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=reference_points.dtype,
                                 device=reference_points.device)
            ref = (reference_points * sizes).sub_(0.5)[:, :, None, :, None, :]  # [B, Lq, 1, L, 1, 2]
            pixel_xy = (torch.add(offsets[..., 0], ref[..., 0]), torch.add(offsets[..., 1], ref[..., 1]))
            out = gathered_deform_attn_core(value, spatial_shapes, None, weights, pixel_xy=pixel_xy)
            return self.output_proj(out)
        # offsets are in pixels of each level: divide by (W_l, H_l)
        normalizer = torch.tensor([[w, h] for h, w in spatial_shapes], dtype=offsets.dtype, device=offsets.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn_core(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
