"""Mask class tokens: equivalence with plain CLIP, exact masking, reference oracle, freezing."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from masqclip.modeling.clip import MasQCLIP, create_clip, masks_to_visibility
from masqclip.modeling.clip import vit_masq
from masqclip.modeling.clip.reference import reference_mask_embeddings

torch.set_num_threads(2)
ATOL = 2e-5


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return create_clip(model_name="masqclip-tiny", pretrained="")


@pytest.fixture
def tiny_visual(tiny_clip):
    """A fresh copy of the tiny vision tower (MasQCLIP takes over and extends the tower it gets)."""
    return copy.deepcopy(tiny_clip.visual)


def _tower(**kw) -> VisionTransformer:
    args = dict(image_size=48, patch_size=12, width=64, layers=2, heads=4, mlp_ratio=2.0, output_dim=32)
    args.update(kw)
    torch.manual_seed(1)
    return VisionTransformer(**args).eval()


def _all_visible_equivalence(model, visual_forward, image_size, n_masks=3, batch=2):
    images = torch.randn(batch, 3, *image_size)
    masq = MasQCLIP(visual=model, new_q_init="copy")
    masks = torch.full((batch, n_masks, 7, 9), 3.0)  # any resolution, all positive = all visible
    with torch.no_grad():
        expected = F.normalize(visual_forward(images), dim=-1)
        tokens, image_embedding = masq(images, masks, return_image_embedding=True)
    assert tokens.shape == (batch, n_masks, expected.shape[-1])
    torch.testing.assert_close(image_embedding, expected, atol=ATOL, rtol=0)
    for q in range(n_masks):
        torch.testing.assert_close(tokens[:, q], expected, atol=ATOL, rtol=0)


def test_all_visible_equals_clip_image_embedding_tiny(tiny_clip):
    model = copy.deepcopy(tiny_clip)
    _all_visible_equivalence(model.visual, lambda x: model.encode_image(x), tuple(model.visual.image_size))


def test_all_visible_equals_clip_image_embedding_vit_b16():
    torch.manual_seed(0)
    model = create_clip(model_name="ViT-B/16", pretrained="")
    _all_visible_equivalence(model.visual, lambda x: model.encode_image(x), (224, 224), n_masks=2, batch=1)


def test_all_visible_equivalence_gelu_layerscale_tower():
    # plain GELU (not QuickGELU), LayerScale, 48 px / patch 12: nothing assumes OpenAI's shapes.
    visual = _tower(ls_init_value=0.5)
    _all_visible_equivalence(visual, visual, (48, 48))


def test_visibility_known_answer():
    logits = torch.full((1, 2, 16, 16), -1.0)
    logits[0, 0, :, :8] = 1.0  # left half of the image
    logits[0, 1, 0, 0] = 1.0  # one corner pixel: after bilinear resize it still touches patch 0
    vis = masks_to_visibility(logits, image_size=(64, 64), patch_size=(8, 8))
    assert vis.shape == (1, 2, 1 + 64) and vis.dtype == torch.bool
    assert vis[0, :, 0].all()  # class token always visible
    grid = vis[0, 0, 1:].view(8, 8)
    assert grid[:, :4].all() and not grid[:, 4:].any()
    corner = vis[0, 1, 1:].view(8, 8)
    assert corner[0, 0] and corner.sum() == 1


def test_invisible_patches_do_not_reach_mask_token_single_layer():
    visual = _tower(layers=1)
    masq = MasQCLIP(visual=visual, new_q_init="random")
    images = torch.randn(1, 3, 48, 48)
    masks = torch.full((1, 1, 48, 48), -1.0)
    masks[..., :24] = 1.0  # left two of four patch columns
    perturbed = images.clone()
    perturbed[..., 24:] += 5 * torch.randn_like(perturbed[..., 24:])
    with torch.no_grad():
        a, img_a = masq(images, masks, return_image_embedding=True)
        b, img_b = masq(perturbed, masks, return_image_embedding=True)
    assert (img_a - img_b).abs().max() > 1e-3  # the image embedding sees the change
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # the mask token does not


def test_attention_weights_exactly_zero_outside_mask(monkeypatch, tiny_visual):
    """In every layer, replacing the keys/values of hidden tokens leaves mask-token rows unchanged."""
    real = F.scaled_dot_product_attention
    calls = []

    n_masks = 3

    def probe(q, k, v, attn_mask=None, **kw):
        out = real(q, k, v, attn_mask=attn_mask, **kw)
        hidden = ~attn_mask  # [B, 1, rows, keys]; the last n_masks rows are the mask tokens
        mask_rows_hidden = hidden[:, :, -n_masks:]
        assert mask_rows_hidden.any()
        noise_k, noise_v = k + 10 * torch.randn_like(k), v + 10 * torch.randn_like(v)
        # a key hidden from EVERY mask row can be replaced wholesale
        col_hidden = mask_rows_hidden.all(dim=2, keepdim=True).transpose(-1, -2)  # [B, 1, keys, 1]
        k2, v2 = torch.where(col_hidden, noise_k, k), torch.where(col_hidden, noise_v, v)
        out2 = real(q, k2, v2, attn_mask=attn_mask, **kw)
        torch.testing.assert_close(out2[:, :, -n_masks:], out[:, :, -n_masks:], atol=1e-6, rtol=0)
        assert (out2[:, :, :-n_masks] - out[:, :, :-n_masks]).abs().max() > 1e-3  # image rows see them
        calls.append(1)
        return out

    monkeypatch.setattr(vit_masq.F, "scaled_dot_product_attention", probe)
    masq = MasQCLIP(visual=tiny_visual, new_q_init="copy")
    masks = torch.full((2, n_masks, 32, 32), -2.0)
    masks[:, :, 4:12, 4:12] = 2.0
    with torch.no_grad():
        masq(torch.randn(2, 3, 64, 64), masks)
    assert len(calls) == len(tiny_visual.transformer.resblocks)  # one fused call per layer


@pytest.mark.parametrize("tuning,init", [(True, "random"), (False, "copy")])
def test_matches_reference_port_with_random_masks(tiny_visual, tuning, init):
    torch.manual_seed(3)
    masq = MasQCLIP(visual=tiny_visual, new_q_init=init, tuning=tuning)
    with torch.no_grad():
        masq.mask_embeddings.add_(0.1 * torch.randn_like(masq.mask_embeddings))
    images = torch.randn(2, 3, 64, 64)
    masks = torch.randn(2, 6, 20, 20)
    vis = masq.visibility(masks)
    assert not vis.all() and vis[..., 1:].any()
    with torch.no_grad():
        fast = masq(images, visibility=vis)
    torch.testing.assert_close(fast, reference_mask_embeddings(masq, images, vis), atol=ATOL, rtol=0)


def test_parameter_names_and_freezing(tiny_visual):
    masq = MasQCLIP(visual=tiny_visual)
    names = dict(masq.named_parameters())
    trainable = {n for n, p in names.items() if p.requires_grad}
    layers = len(tiny_visual.transformer.resblocks)
    expected = {"mask_embeddings"} | {f"visual.transformer.resblocks.{i}.attn.new_q_proj.{w}"
                                      for i in range(layers) for w in ("weight", "bias")}
    assert trainable == expected
    torch.testing.assert_close(masq.mask_embeddings, tiny_visual.positional_embedding[0])
    frozen = MasQCLIP(visual=_tower(), tuning=False)
    assert frozen.trainable_parameters() == []
    with pytest.raises(ValueError):
        MasQCLIP(visual=_tower(), new_q_init="zeros")


def test_gradients_reach_only_mask_parameters(tiny_visual):
    masq = MasQCLIP(visual=tiny_visual, new_q_init="random")
    out = masq(torch.randn(1, 3, 64, 64), torch.randn(1, 4, 16, 16))
    out.sum().backward()
    for name, p in masq.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_unsupported_towers_are_refused():
    with pytest.raises(TypeError, match="pooling"):
        MasQCLIP(visual=_tower(pool_type="avg"))
