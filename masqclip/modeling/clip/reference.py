"""A deliberately plain port of the reference MasQCLIP mask-token design: the test oracle for
``MasQCLIP`` and the baseline of ``benchmarks/masq_head.py``.

Per layer it builds the whole [image tokens; mask tokens] sequence, projects queries, keys and
values of *every* token, forms the full (N+Q) x (N+Q) score matrix with explicit matmuls, adds an
additive mask (0 = allowed, -inf = hidden) and applies softmax, as the official implementation
does. Cost and memory grow quadratically with the number of masks; use ``MasQCLIP.forward``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .vit_masq import MasQCLIP


def additive_attention_mask(visibility: torch.Tensor) -> torch.Tensor:
    """Full-sequence additive mask.

    Args:
        visibility: bool [B, Q, N] (N = 1 + patches), True where a mask token may attend.

    Returns:
        float [B, N+Q, N+Q]: image rows see image tokens only; mask row q sees its visible image
        tokens (the class token always, so every softmax row stays finite); -inf elsewhere,
        including every mask-token column.
    """
    b, q, n = visibility.shape
    allowed = torch.zeros(b, n + q, n + q, dtype=torch.bool, device=visibility.device)
    allowed[:, :n, :n] = True
    allowed[:, n:, :n] = visibility
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=visibility.device)
    return mask.masked_fill(~allowed, float("-inf"))


@torch.no_grad()
def reference_mask_embeddings(model: MasQCLIP, images: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    """Mask embeddings by the reference algorithm.

    Args:
        model: a ``MasQCLIP``.
        images: float [B, 3, H, W], CLIP-normalised.
        visibility: bool [B, Q, 1 + patches].

    Returns:
        float [B, Q, D], L2-normalised.
    """
    v = model.visual
    x_img = model._embed_patches(images)
    b, n, c = x_img.shape
    q_count = visibility.shape[1]
    start = v.ln_pre(v.class_embedding + model.mask_embeddings)
    x = torch.cat([x_img, start.expand(b, q_count, c)], dim=1)
    additive = additive_attention_mask(visibility)
    for block in v.transformer.resblocks:
        attn = block.attn
        heads, dh = attn.num_heads, c // attn.num_heads
        h = block.ln_1(x)
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        q, k, val = qkv.split(c, dim=-1)
        if model.tuning:
            q = torch.cat([q[:, :n], attn.new_q_proj(h[:, n:])], dim=1)
        q = q.reshape(b, n + q_count, heads, dh).transpose(1, 2)
        k = k.reshape(b, n + q_count, heads, dh).transpose(1, 2)
        val = val.reshape(b, n + q_count, heads, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + additive[:, None]
        out = (scores.softmax(dim=-1) @ val).transpose(1, 2).reshape(b, n + q_count, c)
        x = x + block.ls_1(attn.out_proj(out))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return F.normalize(v.ln_post(x[:, n:]) @ v.proj, dim=-1)
