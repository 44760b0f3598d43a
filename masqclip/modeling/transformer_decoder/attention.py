"""Post-norm attention / FFN layers of the masked-attention decoder.

Each attention layer keeps an ``nn.MultiheadAttention`` (so parameter names are ``in_proj_weight``,
``in_proj_bias``, ``out_proj.*`` as in the official checkpoints) but computes with
``F.scaled_dot_product_attention`` on batch-first tensors, which takes a mask broadcast over heads
instead of a per-head copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multihead_attention(mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mha``'s attention with SDPA; numerically nn.MultiheadAttention's (batch-first) result.

    Args:
        mha: supplies in_proj_weight [3C, C], in_proj_bias [3C], out_proj, num_heads, dropout.
        query: [B, Lq, C]; key: [B, Lk, C]; value: [B, Lk, C].
        attn_mask: optional bool [B, 1 or M, Lq, Lk], True = may attend (SDPA convention, the
            opposite of nn.MultiheadAttention's).
    Returns:
        [B, Lq, C].
    """
    b, lq, c = query.shape
    lk = key.shape[1]
    m = mha.num_heads
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).view(b, lq, m, c // m).transpose(1, 2)
    k = F.linear(key, w_k, b_k).view(b, lk, m, c // m).transpose(1, 2)
    v = F.linear(value, w_v, b_v).view(b, lk, m, c // m).transpose(1, 2)
    dropout = mha.dropout if mha.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    return mha.out_proj(out.transpose(1, 2).reshape(b, lq, c))


class _XavierInit(nn.Module):
    def reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


class SelfAttentionLayer(_XavierInit):
    """tgt <- norm(tgt + SelfAttn(q = k = tgt + query_pos, v = tgt))."""

    def __init__(self, *, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """Args: tgt, query_pos [B, Q, C]. Returns: [B, Q, C]."""
        qk = tgt + query_pos
        return self.norm(tgt + self.dropout(multihead_attention(self.self_attn, qk, qk, tgt)))


class CrossAttentionLayer(_XavierInit):
    """tgt <- norm(tgt + Attn(q = tgt + query_pos, k = memory + pos, v = memory, mask))."""

    def __init__(self, *, d_model: int, nhead: int, dropout: float = 0.0):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Args: tgt, query_pos [B, Q, C]; memory, pos [B, S, C]; attn_mask bool [B, 1, Q, S] (True = visible).
        Returns: [B, Q, C]."""
        out = multihead_attention(self.multihead_attn, tgt + query_pos, memory + pos, memory, attn_mask)
        return self.norm(tgt + self.dropout(out))


class FFNLayer(_XavierInit):
    """tgt <- norm(tgt + linear2(relu(linear1(tgt))))."""

    def __init__(self, *, d_model: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.reset_parameters()

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """Args: tgt [B, Q, C]. Returns: [B, Q, C]."""
        return self.norm(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class MLP(nn.Module):
    """``num_layers`` Linear layers (module list ``layers``) with ReLU between them."""

    def __init__(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [..., input_dim]. Returns: [..., output_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
