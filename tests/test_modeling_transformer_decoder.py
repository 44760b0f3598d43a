"""Masked-attention decoder: SDPA attention equals nn.MultiheadAttention, mask rules, outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from masqclip.modeling.transformer_decoder import MultiScaleMaskedTransformerDecoder, PositionEmbeddingSine
from masqclip.modeling.transformer_decoder.attention import multihead_attention


def test_sdpa_attention_equals_nn_multiheadattention_with_mask():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4).eval()
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    visible = torch.rand(2, 5, 7) > 0.4
    visible[:, :, 0] = True  # no empty rows
    ours = multihead_attention(mha, q, k, v, visible[:, None])
    # nn.MultiheadAttention: sequence-first, per-head mask copies, True = hidden
    ref_mask = (~visible).repeat_interleave(4, dim=0)
    ref = mha(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=ref_mask,
              need_weights=False)[0].transpose(0, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_attention_mask_rules():
    embed = torch.tensor([[[1.0], [-1.0], [0.0]]])  # 3 queries, 1 channel
    features = torch.tensor([[[[2.0, -3.0], [0.0, 1.0]]]])  # [1, 1, 2, 2]
    visible = MultiScaleMaskedTransformerDecoder.attention_mask(embed, features)
    assert visible.shape == (1, 1, 3, 4)
    # query 0: logit >= 0 (sigmoid >= 0.5) visible; query 1: its only positive spot;
    # query 2: all logits exactly 0 -> sigmoid 0.5 is not < 0.5, so visible
    assert visible[0, 0, 0].tolist() == [True, False, True, True]
    assert visible[0, 0, 1].tolist() == [False, True, True, False]
    assert visible[0, 0, 2].tolist() == [True, True, True, True]
    hidden_everywhere = MultiScaleMaskedTransformerDecoder.attention_mask(torch.tensor([[[-1.0]]]),
                                                                          torch.ones(1, 1, 2, 2))
    assert hidden_everywhere.all()  # a fully hidden row sees everything


def test_low_resolution_mask_equals_resized_full_prediction():
    torch.manual_seed(1)
    embed = torch.randn(2, 6, 8)
    mask_features = torch.randn(2, 8, 32, 48)
    full = torch.einsum("bqc,bchw->bqhw", embed, mask_features)
    resized = F.interpolate(full, size=(8, 12), mode="bilinear", align_corners=False)
    low = torch.einsum("bqc,bchw->bqhw", embed,
                       F.interpolate(mask_features, size=(8, 12), mode="bilinear", align_corners=False))
    torch.testing.assert_close(low, resized, rtol=1e-4, atol=1e-4)


def _decoder(**overrides):
    kwargs = dict(in_channels=32, hidden_dim=32, num_queries=5, nheads=4, dim_feedforward=64, dec_layers=4,
                  mask_dim=16)
    kwargs.update(overrides)
    return MultiScaleMaskedTransformerDecoder(**kwargs)


def _inputs(b=2):
    gen = torch.Generator().manual_seed(3)
    feats = [torch.randn(b, 32, s, s, generator=gen) for s in (2, 4, 8)]
    return feats, torch.randn(b, 16, 16, 16, generator=gen)


def test_outputs_predictions_after_queries_and_each_layer():
    torch.manual_seed(2)
    dec = _decoder().train()
    feats, mask_features = _inputs()
    out = dec(feats, mask_features)
    assert out["pred_logits"].shape == (2, 5, 2)
    assert out["pred_masks"].shape == (2, 5, 16, 16)
    assert len(out["aux_outputs"]) == 4  # learnable-query prediction + 3 intermediate layers
    assert all(a["pred_masks"].shape == (2, 5, 16, 16) for a in out["aux_outputs"])
    dec.eval()
    with torch.no_grad():
        ev = dec(feats, mask_features)
    torch.testing.assert_close(ev["pred_masks"], out["pred_masks"].detach())
    assert all(a["pred_masks"] is None for a in ev["aux_outputs"])  # not needed at inference


def test_query_prediction_uses_no_image_but_masks_do():
    torch.manual_seed(4)
    dec = _decoder(dec_layers=0).eval()
    feats, mask_features = _inputs()
    out = dec(feats, mask_features)
    # with no layers, both images get the same (learned-query) class logits
    torch.testing.assert_close(out["pred_logits"][0], out["pred_logits"][1])
    assert not torch.allclose(out["pred_masks"][0], out["pred_masks"][1])


def test_class_head_has_two_outputs_and_official_names():
    dec = _decoder(in_channels=64)
    names = set(dec.state_dict())
    assert dec.class_embed.out_features == 2
    assert {"transformer_cross_attention_layers.0.multihead_attn.in_proj_weight",
            "transformer_self_attention_layers.3.self_attn.out_proj.bias", "transformer_ffn_layers.0.linear1.weight",
            "decoder_norm.weight", "query_feat.weight", "query_embed.weight", "level_embed.weight",
            "mask_embed.layers.2.bias", "input_proj.0.weight"} <= names
    assert "input_proj.0.weight" not in _decoder().state_dict()  # identity when channels already match


def test_sine_position_encoding_known_values():
    pe = PositionEmbeddingSine(num_pos_feats=4, normalize=True)
    out = pe(torch.zeros(1, 3, 2, 2))
    assert out.shape == (1, 8, 2, 2)
    # y features first: channel 0 = sin(y_embed / 1), y_embed of row 0 = 1/2 * 2pi (normalised cumsum)
    y0 = 1 / (2 + 1e-6) * 2 * torch.pi
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor(y0).sin())
    torch.testing.assert_close(out[0, 1, 0, 0], torch.tensor(y0).cos())
    # x features: channel 4 + 2 = sin(x_embed / 10000 ** (2 / 4)) at column 1 (x_embed = 2pi)
    x1 = 2 / (2 + 1e-6) * 2 * torch.pi
    torch.testing.assert_close(out[0, 6, 0, 1], torch.tensor(x1 / 10000 ** (2 / 4)).sin())
