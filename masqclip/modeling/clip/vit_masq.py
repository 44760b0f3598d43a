"""Mask class tokens in an open_clip vision transformer (MasQCLIP; docs/method.md#stage-c-masq-tuning).

``MasQCLIP`` wraps an OpenAI-style open_clip ``VisionTransformer`` (conv1, class/positional
embeddings, ln_pre, ``ResidualAttentionBlock``s with ``nn.MultiheadAttention``, ln_post, proj) and
adds, per predicted mask, one *mask class token*:

- the image tokens (class token + patches) run exactly as in plain CLIP;
- a mask token starts as ``ln_pre(class_embedding + mask_embeddings)``; in every layer its query
  comes from the layer's new ``attn.new_q_proj`` applied to ``ln_1`` of the token, its keys and values
  are CLIP's own projections of the image tokens, and it sees only the class token and the patches
  its mask covers; then out_proj, residual, ``ln_2`` + the block's own MLP (QuickGELU or GELU, as the
  model was built), residual;
- its output is ``ln_post(token) @ proj``, L2-normalised.

Mask tokens never attend to each other and image tokens never attend to mask tokens, so the only
keys are the image tokens: each layer runs ONE ``scaled_dot_product_attention`` whose queries are
[image tokens; mask tokens] and whose boolean mask is all-true on the image rows. Memory grows
linearly with the number of masks. The last layer updates only the class token and the mask
tokens (the patch tokens' outputs are never used).

Parameter names stay open_clip's under ``visual.*`` plus ``visual.transformer.resblocks.N.attn.
new_q_proj.{weight,bias}`` and ``mask_embeddings``; the MasQTuning meta-arch holds this module as
``masqclip``, which gives the official checkpoint names.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.precision import full_precision

NEW_Q_INITS = ("copy", "random")


def _check_supported(visual: nn.Module) -> None:
    """Raise a clear error for vision towers this module cannot extend exactly."""
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [n for n in needed if not hasattr(visual, n)]
    if missing:
        raise TypeError(f"MasQCLIP needs an OpenAI-style open_clip VisionTransformer; {type(visual).__name__} "
                        f"lacks {missing} (timm / ResNet towers are not supported)")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise TypeError("MasQCLIP needs class-token pooling (no attentional pooler, pool_type 'tok')")
    if visual.proj is None:
        raise TypeError("MasQCLIP needs the vision tower's final projection 'proj'")
    for i, block in enumerate(visual.transformer.resblocks):
        if not isinstance(getattr(block, "attn", None), nn.MultiheadAttention) or hasattr(block, "ln_1_kv"):
            raise TypeError(f"resblocks.{i}: MasQCLIP needs ResidualAttentionBlock with nn.MultiheadAttention "
                            "(custom/cross-attention blocks are not supported)")
        if block.attn._qkv_same_embed_dim is False:
            raise TypeError(f"resblocks.{i}: separate q/k/v projection weights are not supported")


def masks_to_visibility(mask_logits: torch.Tensor, *, image_size: tuple[int, int],
                        patch_size: tuple[int, int]) -> torch.Tensor:
    """Which tokens each mask class token may attend to.

    Args:
        mask_logits: float [B, Q, h, w] mask logits at any resolution.
        image_size: (H, W) of the CLIP input.
        patch_size: (ph, pw) of the CLIP patch embedding.

    Returns:
        bool [B, Q, 1 + gh*gw]: token 0 (the class token) is always visible; a patch is visible
        where the bilinearly resized logit, max-pooled over the patch, is > 0.
    """
    b, q = mask_logits.shape[:2]
    resized = F.interpolate(mask_logits.float(), size=tuple(image_size), mode="bilinear", align_corners=False)
    pooled = F.max_pool2d(resized, kernel_size=tuple(patch_size), stride=tuple(patch_size))
    visible = (pooled > 0).flatten(2)
    cls = torch.ones(b, q, 1, dtype=torch.bool, device=mask_logits.device)
    return torch.cat([cls, visible], dim=2)


class MasQCLIP(nn.Module):
    """An open_clip vision tower with mask class tokens.

    Attributes:
        visual: the open_clip ``VisionTransformer``; each block's ``attn`` carries ``new_q_proj``.
        mask_embeddings: float [width], added to the class embedding to start every mask token.
        tuning: False = the frozen baseline (mask tokens use CLIP's own query projection).
    """

    def __init__(self, *, visual: nn.Module, new_q_init: str = "random", tuning: bool = True):
        """
        Args:
            visual: open_clip ``VisionTransformer`` (taken over: its parameters are frozen here).
            new_q_init: "random" (``nn.Linear``'s default initialisation: the official recipe) or
                "copy" (new query projections start as CLIP's q projection).
            tuning: train new query projections + mask embedding (True) or use CLIP's own q (False).
        """
        super().__init__()
        if new_q_init not in NEW_Q_INITS:
            raise ValueError(f"new_q_init must be one of {NEW_Q_INITS}, got {new_q_init!r}")
        _check_supported(visual)
        self.visual = visual
        self.tuning = bool(tuning)
        width = visual.class_embedding.shape[0]
        for param in visual.parameters():
            param.requires_grad_(False)
        weight = visual.transformer.resblocks[0].attn.in_proj_weight
        for block in visual.transformer.resblocks:
            proj = nn.Linear(width, width, device=weight.device, dtype=weight.dtype)
            if new_q_init == "copy":
                with torch.no_grad():
                    proj.weight.copy_(block.attn.in_proj_weight[:width])
                    proj.bias.copy_(block.attn.in_proj_bias[:width])
            proj.requires_grad_(self.tuning)
            block.attn.new_q_proj = proj
        self.mask_embeddings = nn.Parameter(visual.positional_embedding[0].detach().clone(),
                                            requires_grad=self.tuning)

    # ------------------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.visual.image_size)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_size)

    @property
    def embed_dim(self) -> int:
        return self.visual.proj.shape[1]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The new query projections and the mask embedding (empty for the frozen baseline)."""
        return [p for p in self.parameters() if p.requires_grad]

    def visibility(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """bool [B, Q, 1 + patches] for mask logits [B, Q, h, w] (see ``masks_to_visibility``)."""
        return masks_to_visibility(mask_logits, image_size=self.image_size, patch_size=self.patch_size)

    # ------------------------------------------------------------------------------------------
    def _embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's token embedding (no patch dropout). images [B, 3, H, W] -> [B, 1 + P, width]."""
        v = self.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def _block(self, block: nn.Module, x: torch.Tensor, n_img: int, attn_mask: torch.Tensor, *,
               patch_outputs: bool = True) -> torch.Tensor:
        """One residual block over [image tokens; mask tokens].

        Args:
            x: [B, n_img + Q, C]; attn_mask: bool [B, 1, n_img + Q, n_img] (True = may attend).
            patch_outputs: False in the last block, where only the class token and the mask tokens
                are needed: the patch tokens still give keys/values but are not updated.

        Returns:
            [B, n_img + Q, C], or [B, 1 + Q, C] (class token, mask tokens) without patch outputs.
        """
        attn = block.attn
        b, _, c = x.shape
        heads = attn.num_heads
        h = block.ln_1(x)
        qkv = F.linear(h[:, :n_img], attn.in_proj_weight, attn.in_proj_bias)
        q_img, k, v = qkv.split(c, dim=-1)
        if self.tuning:
            q_mask = attn.new_q_proj(h[:, n_img:])
        else:
            q_mask = F.linear(h[:, n_img:], attn.in_proj_weight[:c], attn.in_proj_bias[:c])
        if not patch_outputs:
            q_img, x = q_img[:, :1], torch.cat([x[:, :1], x[:, n_img:]], dim=1)
            attn_mask = torch.cat([attn_mask[:, :, :1], attn_mask[:, :, n_img:]], dim=2)
        q = torch.cat([q_img, q_mask], dim=1)
        n = q.shape[1]
        q = q.view(b, n, heads, c // heads).transpose(1, 2)
        k = k.view(b, n_img, heads, c // heads).transpose(1, 2)
        v = v.view(b, n_img, heads, c // heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = attn.out_proj(out.transpose(1, 2).reshape(b, n, c))
        x = x + block.ls_1(out)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def forward(self, images: torch.Tensor, mask_logits: torch.Tensor | None = None, *,
                visibility: torch.Tensor | None = None,
                return_image_embedding: bool = False):
        """Embed every mask of every image with its own mask class token.

        Args:
            images: float [B, 3, H, W], CLIP-normalised, at the model's input size.
            mask_logits: float [B, Q, h, w] mask logits (any resolution); or give ``visibility``.
            visibility: bool [B, Q, 1 + patches] (overrides ``mask_logits``).
            return_image_embedding: also return CLIP's own image embedding.

        Returns:
            float [B, Q, D] L2-normalised mask embeddings (D = CLIP embed dim); with
            ``return_image_embedding`` a tuple (that, float [B, D] normalised image embedding).
        """
        if visibility is None:
            if mask_logits is None:
                raise ValueError("give mask_logits or visibility")
            visibility = self.visibility(mask_logits)
        v = self.visual
        x_img = self._embed_patches(images)
        b, n_img, width = x_img.shape
        n_mask = visibility.shape[1]
        if visibility.shape != (b, n_mask, n_img):
            raise ValueError(f"visibility must be [B={b}, Q, {n_img}], got {tuple(visibility.shape)}")
        start = v.ln_pre((v.class_embedding + self.mask_embeddings).to(x_img.dtype))
        x = torch.cat([x_img, start.expand(b, n_mask, width)], dim=1)
        image_rows = torch.ones(b, n_img, n_img, dtype=torch.bool, device=x.device)
        attn_mask = torch.cat([image_rows, visibility.to(x.device)], dim=1).unsqueeze(1)
        blocks = v.transformer.resblocks
        for i, block in enumerate(blocks):
            x = self._block(block, x, n_img, attn_mask, patch_outputs=i < len(blocks) - 1)
        with full_precision(x):  # the final projection feeds CLIP logits: fp32 under autocast too
            tokens = v.ln_post(x.float()) @ v.proj.float()  # x = [class token; mask tokens]
            tokens = F.normalize(tokens, dim=-1)
        if return_image_embedding:
            return tokens[:, 1:], tokens[:, 0]
        return tokens[:, 1:]
