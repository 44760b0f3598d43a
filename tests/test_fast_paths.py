"""Equivalence of the inference fast paths with straightforward reference formulations.

Each optimisation is compared with the plain computation it replaces, written out here: frozen
batch-norm folded into its convolution, the points-major deformable-attention core, instance
post-processing that chooses queries before upsampling them, and the bf16 inference option
(which must refuse cleanly where the CPU has no bf16 matrix units).
"""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from masqclip.config import setup_cfg
from masqclip.modeling import build_model
from masqclip.modeling.bf16 import (
    Bf16Unsupported,
    apply_test_precision,
    bf16_support,
    convert_for_bf16_inference,
)
from masqclip.modeling.layers import Conv2d, FrozenBatchNorm2d
from masqclip.modeling.pixel_decoder import ms_deform_attn_core
from masqclip.modeling.pixel_decoder.ms_deform_attn import gathered_deform_attn_core
from masqclip.modeling.postprocess import instance_inference, mask_scores, upsample_mask_logits

SYNTHETIC = "config/models/synthetic/teacher.yaml"


# -- frozen batch-norm ----------------------------------------------------------------------
def _random_frozen_bn(c: int, gen: torch.Generator) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(c)
    bn.weight.copy_(torch.randn(c, generator=gen))
    bn.bias.copy_(torch.randn(c, generator=gen))
    bn.running_mean.copy_(torch.randn(c, generator=gen))
    bn.running_var.copy_(torch.rand(c, generator=gen) + 0.1)
    return bn


def test_frozen_bn_is_batch_norm_with_fixed_statistics():
    gen = torch.Generator().manual_seed(0)
    bn = _random_frozen_bn(6, gen)
    x = torch.randn(2, 6, 5, 7, generator=gen)
    ref = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    torch.testing.assert_close(bn(x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", [None, F.relu])
def test_folded_conv_equals_conv_then_frozen_bn(bias, activation):
    gen = torch.Generator().manual_seed(1)
    conv = Conv2d(4, 6, 3, padding=1, stride=2, bias=bias, norm=_random_frozen_bn(6, gen), activation=activation)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        if bias:
            conv.bias.copy_(torch.randn(6, generator=gen))
    keys = list(conv.state_dict())
    x = torch.randn(2, 4, 9, 11, generator=gen)
    ref = conv.norm(F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)).detach()
    if activation is not None:
        ref = activation(ref)
    with torch.no_grad():  # inference: the folded single convolution
        folded = conv(x)
        folded_cl = conv(x.contiguous(memory_format=torch.channels_last))  # folded weight laid out channels-last
    torch.testing.assert_close(folded, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded_cl, ref, rtol=1e-5, atol=1e-5)
    # training (the conv weight needs a gradient): same values, and the weight's usual gradient
    out = conv(x)
    torch.testing.assert_close(out.detach(), ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    w = conv.weight.detach().clone().requires_grad_(True)
    ref_out = conv.norm(F.conv2d(x, w, conv.bias, stride=2, padding=1))
    (activation(ref_out) if activation is not None else ref_out).sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad, rtol=1e-5, atol=1e-5)
    assert list(conv.state_dict()) == keys  # nothing folded into the stored weights
    assert conv.weight.dtype == torch.float32 and not hasattr(conv, "_folded")


def test_folded_weights_are_computed_once_and_again_after_any_change():
    """Inference keeps the folded weights while nothing they derive from changes, and folds again
    after an in-place change, a state-dict load or new statistics (never a stale result)."""
    gen = torch.Generator().manual_seed(3)
    conv = Conv2d(4, 6, 3, padding=1, bias=True, norm=_random_frozen_bn(6, gen))
    x = torch.randn(2, 4, 9, 11, generator=gen)

    def reference():
        return conv.norm(F.conv2d(x, conv.weight, conv.bias, padding=1))

    with torch.no_grad():
        first = conv(x)
        folded = conv.__dict__["_fold_cache"][1][0]
        torch.testing.assert_close(conv(x), first, rtol=0, atol=0)
        assert conv.__dict__["_fold_cache"][1][0] is folded  # reused, not recomputed
        changes = (lambda: conv.weight.mul_(-2), lambda: conv.bias.add_(1), lambda: conv.norm.running_var.mul_(3),
                   lambda: conv.norm.weight.add_(0.5),
                   lambda: conv.load_state_dict({k: torch.randn(v.shape, generator=gen).abs() + 0.1
                                                 for k, v in conv.state_dict().items()}))
        for change in changes:
            change()
            torch.testing.assert_close(conv(x), reference(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last)), reference(),
                                       rtol=1e-5, atol=1e-5)
    assert all("fold" not in k for k in conv.state_dict())


def test_backbone_inference_equals_unfolded_reference(repo_dir):
    """The whole ResNet (frozen BN everywhere, in-place residuals at inference) against the same
    network with every norm applied as a separate step."""
    torch.manual_seed(0)
    cfg = setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "FrozenBN"])
    backbone = build_model(cfg).backbone.eval()
    gen = torch.Generator().manual_seed(2)
    for m in backbone.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    x = torch.randn(1, 3, 64, 64, generator=gen)
    with torch.no_grad():
        fast = backbone(x)
    for m in backbone.modules():  # the reference: plain conv, then the norm's own pass
        if isinstance(m, Conv2d) and isinstance(m.norm, FrozenBatchNorm2d):
            m.forward = _unfolded_forward.__get__(m)
    with torch.no_grad():
        slow = backbone(x)
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-5)


def _unfolded_forward(self, x):
    x = self.norm(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups))
    return self.activation(x) if self.activation is not None else x


# -- deformable attention -------------------------------------------------------------------
def _levelwise_core(value, shapes, locations, weights):
    """The earlier formulation: per level, grid_sample [B*M, D, Lq, P], weight, sum points, add."""
    b, _, m, d = value.shape
    lq = locations.shape[1]
    grids = (2 * locations - 1).transpose(1, 2).flatten(0, 1)
    w = weights.transpose(1, 2).flatten(0, 1).unsqueeze(1)
    value = value.permute(0, 2, 3, 1).reshape(b * m, d, -1)
    out, start = 0, 0
    for lvl, (h, wd) in enumerate(shapes):
        v = value[:, :, start:start + h * wd].reshape(b * m, d, h, wd)
        start += h * wd
        sampled = F.grid_sample(v, grids[:, :, lvl], mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (sampled * w[..., lvl, :]).sum(-1)
    return out.reshape(b, m * d, lq).transpose(1, 2)


def test_deform_attn_core_equals_levelwise_formulation_values_and_gradients():
    gen = torch.Generator().manual_seed(3)
    shapes = [(9, 13), (5, 7), (3, 4)]
    b, m, d, lq, p = 2, 4, 8, 17, 4
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=gen, requires_grad=True)
    locations = (torch.rand(b, lq, m, len(shapes), p, 2, generator=gen) * 1.4 - 0.2).requires_grad_(True)
    weights = torch.rand(b, lq, m, len(shapes), p, generator=gen).softmax(-1).requires_grad_(True)
    got = ms_deform_attn_core(value, shapes, locations, weights)  # autograd formulation
    ref = _levelwise_core(value, shapes, locations, weights)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # inference formulation (per-point accumulation)
        torch.testing.assert_close(ms_deform_attn_core(value, shapes, locations, weights), ref.detach(),
                                   rtol=1e-5, atol=1e-6)
    g = torch.randn(got.shape, generator=gen)
    grads = torch.autograd.grad((got * g).sum(), (value, locations, weights))
    ref_grads = torch.autograd.grad((ref * g).sum(), (value, locations, weights))
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shapes,points", [([(9, 13), (5, 7), (3, 4)], 4), ([(6, 5)], 1), ([(1, 1), (2, 3)], 3)])
def test_gathered_deform_attn_core_equals_grid_sample_formulation(shapes, points, dtype, tol):
    """The inference core (one weighted gather over a zero-bordered value table) against
    grid_sample per level, with points inside, on the border, just outside (partly zero taps) and
    far outside (all taps zero, clamped onto the border), in float64 to see re-association only."""
    gen = torch.Generator().manual_seed(5)
    b, m, d, lq = 2, 4, 8, 23
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=gen, dtype=dtype)
    locations = torch.rand(b, lq, m, len(shapes), points, 2, generator=gen, dtype=dtype) * 1.6 - 0.3
    flat = locations.view(-1)
    flat[:40] = torch.tensor([0.0, 1.0, -0.5, 1.5, -7.0, 9.0, 1e-9, 1 - 1e-9] * 5, dtype=dtype)  # edges, far out
    weights = torch.rand(b, lq, m, len(shapes), points, generator=gen, dtype=dtype)
    ref = _levelwise_core(value, shapes, locations, weights)
    with torch.no_grad():
        got = ms_deform_attn_core(value, shapes, locations, weights)
    assert got.shape == ref.shape and got.dtype == dtype
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gathered_deform_attn_core(value, shapes, locations, weights), ref, rtol=tol, atol=tol)


def test_gathered_deform_attn_core_non_finite_locations_sample_nothing():
    """A NaN or infinite location (a diverged model) reads zeros, as a point far outside; no bad index."""
    gen = torch.Generator().manual_seed(8)
    shapes = [(5, 7), (3, 4)]
    value = torch.randn(2, 47, 4, 8, generator=gen)
    locations = torch.rand(2, 9, 4, 2, 4, 2, generator=gen)
    weights = torch.rand(2, 9, 4, 2, 4, generator=gen)
    bad = locations.clone()
    bad[0, 0, 0, 0, 0, 0], bad[1, 2, 1, 1, 2, 1], bad[1, 3, 1, 1, 2, 0] = float("nan"), float("inf"), -float("inf")
    far = torch.where(bad.isfinite(), bad, torch.full_like(bad, -5.0))
    with torch.no_grad():
        got = gathered_deform_attn_core(value, shapes, bad, weights)
    torch.testing.assert_close(got, _levelwise_core(value, shapes, far, weights), rtol=1e-5, atol=1e-6)


def test_gathered_deform_attn_core_bf16_values_sample_in_fp32():
    """bf16 values (the bf16 option's value projection): coordinates and weights in fp32, fp32 result."""
    gen = torch.Generator().manual_seed(6)
    shapes = [(17, 19), (9, 10)]
    value = torch.randn(1, sum(h * w for h, w in shapes), 2, 8, generator=gen)
    locations = torch.rand(1, 30, 2, 2, 4, 2, generator=gen)
    weights = torch.rand(1, 30, 2, 2, 4, generator=gen)
    ref = _levelwise_core(value.bfloat16().float(), shapes, locations, weights)
    got = gathered_deform_attn_core(value.bfloat16(), shapes, locations, weights)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_encoder_layer_inference_path_equals_autograd_path():
    """A deformable encoder layer in eval mode: the no-grad path (pixel coordinates straight from the
    offsets, gathered core, in-place residuals and ReLU) against the autograd path (grid_sample)."""
    from masqclip.modeling.pixel_decoder.msdeformattn import MSDeformAttnEncoder, MSDeformAttnEncoderLayer
    gen = torch.Generator().manual_seed(7)
    layer = MSDeformAttnEncoderLayer(d_model=32, d_ffn=64, dropout=0.1, n_levels=3, n_heads=4, n_points=4).eval()
    with torch.no_grad():
        for prm in layer.parameters():  # offsets and attention weights start at zero: make them matter
            prm.add_(torch.randn(prm.shape, generator=gen) * 0.3)
    shapes = [(8, 10), (4, 5), (2, 3)]
    s = sum(h * w for h, w in shapes)
    src, pos = torch.randn(2, s, 32, generator=gen), torch.randn(2, s, 32, generator=gen)
    valid = torch.tensor([[[1.0, 1.0]] * 3, [[0.8, 0.6]] * 3])
    ref_points = MSDeformAttnEncoder.get_reference_points(shapes, valid)
    ref = layer(src, pos, ref_points, shapes)
    assert ref.requires_grad  # the autograd formulation ran
    with torch.no_grad():
        got = layer(src, pos, ref_points, shapes)
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-5)


def test_pixel_decoder_inference_equals_autograd_path():
    """The whole pixel decoder in eval mode, no-grad (gathered core, encoder levels as channels-last
    views that resizing keeps channels-last) against its autograd path."""
    from masqclip.modeling.layers import ShapeSpec
    from masqclip.modeling.pixel_decoder import MSDeformAttnPixelDecoder
    torch.manual_seed(9)
    shapes = {"res2": ShapeSpec(16, 4), "res3": ShapeSpec(24, 8), "res4": ShapeSpec(32, 16), "res5": ShapeSpec(40, 32)}
    dec = MSDeformAttnPixelDecoder(input_shape=shapes, transformer_in_features=["res3", "res4", "res5"], conv_dim=32,
                                   mask_dim=16, norm="GN", common_stride=4, transformer_dropout=0.1,
                                   transformer_nheads=4, transformer_dim_feedforward=64, transformer_enc_layers=2,
                                   transformer_n_points=4).eval()
    with torch.no_grad():
        for prm in dec.parameters():
            prm.add_(torch.randn_like(prm) * 0.1)
    gen = torch.Generator().manual_seed(9)
    feats = {k: torch.randn(1, v.channels, 128 // v.stride, 96 // v.stride, generator=gen).contiguous(
        memory_format=torch.channels_last) for k, v in shapes.items()}
    ref = dec.forward_features(feats)
    with torch.no_grad():
        got = dec.forward_features(feats)
    for a, r in zip([got[0], got[1], *got[2]], [ref[0], ref[1], *ref[2]]):
        torch.testing.assert_close(a, r.detach(), rtol=1e-5, atol=1e-5)
    assert got[0].is_contiguous(memory_format=torch.channels_last)


# -- position encoding ----------------------------------------------------------------------
def test_cached_sine_position_encoding_equals_computed_and_is_bounded():
    from masqclip.modeling.transformer_decoder.position_encoding import POSITION_CACHE_SIZE, PositionEmbeddingSine
    pe = PositionEmbeddingSine(num_pos_feats=8, normalize=True)
    for h, w in [(5, 7), (3, 4), (5, 7)]:
        x = torch.randn(3, 2, h, w)
        ref = pe.encode(x)
        with torch.no_grad():
            got = pe(x)
            again = pe(x[:1])
        assert got.shape == ref.shape and again.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
        torch.testing.assert_close(again, ref[:1], rtol=0, atol=0)
        assert again.data_ptr() == got.data_ptr()  # one cached map, expanded over the batch
    assert len(pe._cache) == 2
    with torch.no_grad():
        for k in range(POSITION_CACHE_SIZE + 3):
            pe(torch.zeros(1, 1, 2, k + 1))
    assert len(pe._cache) == POSITION_CACHE_SIZE
    torch.testing.assert_close(pe(torch.zeros(2, 1, 5, 7)), pe.encode(torch.zeros(2, 1, 5, 7)), rtol=0, atol=0)
    assert pe(torch.zeros(1, 1, 5, 7)).requires_grad is False


# -- post-processing ------------------------------------------------------------------------
def _reference_instances(class_probs, full_logits, topk, thing_ids=None):
    """Straightforward: every mask at full size, top-k pairs, threshold, score."""
    k = class_probs.shape[1]
    scores, idx = class_probs.flatten().topk(min(topk, class_probs.numel()), sorted=True)
    classes, queries = idx % k, idx // k
    if thing_ids is not None:
        keep = torch.tensor([int(c) in set(thing_ids) for c in classes], dtype=torch.bool)
        scores, classes, queries = scores[keep], classes[keep], queries[keep]
    logits = full_logits[queries]
    binary = (logits > 0).float()
    quality = (logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return logits > 0, classes, scores * quality


@pytest.mark.parametrize("num_classes,topk,thing_ids,chunk", [
    (1, 100, None, 8),  # class-agnostic teacher: every query kept
    (1, 5, None, 2),
    (4, 9, None, 3),  # queries picked for several classes (resized once, gathered)
    (4, 12, [0, 2], 5),
    (3, 50, None, 64),
])
def test_instance_inference_upsampling_only_kept_masks_equals_reference(num_classes, topk, thing_ids, chunk):
    gen = torch.Generator().manual_seed(4)
    q, h, w = 7, 6, 8
    probs = torch.rand(q, num_classes, generator=gen)
    probs[2] = probs[5]  # ties between queries
    if num_classes > 1:
        probs[1, 0] = probs[1, 1]  # and between classes of one query
    low = torch.randn(q, h, w, generator=gen) * 3
    low[3] = -5.0  # an empty mask scores 0
    padded, img, out = (24, 32), (22, 29), (45, 61)

    def resize(m):
        return upsample_mask_logits(m, padded, img, *out)

    got = instance_inference(probs, low, topk=topk, thing_ids=thing_ids, resize=resize, output_size=out,
                             chunk_size=chunk)
    masks, classes, scores = _reference_instances(probs, resize(low), topk, thing_ids)
    assert got.image_size == out
    assert torch.equal(got.pred_masks, masks)
    assert torch.equal(got.pred_classes, classes)
    torch.testing.assert_close(got.scores, scores, rtol=1e-5, atol=1e-7)
    # without resize: as before, on the given grid
    plain = instance_inference(probs, low, topk=topk, thing_ids=thing_ids)
    ref_plain = _reference_instances(probs, low, topk, thing_ids)
    assert plain.image_size == (h, w) and torch.equal(plain.pred_masks, ref_plain[0])
    torch.testing.assert_close(plain.scores, ref_plain[2], rtol=1e-5, atol=1e-7)


def test_instance_inference_crop_only_resize_leaves_input_intact():
    """Output size == unpadded size: the resize is a crop (a strided view), scored on a copy."""
    gen = torch.Generator().manual_seed(7)
    probs, low = torch.rand(5, 1, generator=gen), torch.randn(5, 6, 8, generator=gen)
    kept = low.clone()

    def resize(m):
        return upsample_mask_logits(m, (24, 32), (22, 29), 22, 29)

    got = instance_inference(probs, low, topk=5, resize=resize, output_size=(22, 29), chunk_size=2)
    masks, _, scores = _reference_instances(probs, resize(low), 5)
    assert torch.equal(got.pred_masks, masks) and torch.equal(low, kept)
    torch.testing.assert_close(got.scores, scores, rtol=1e-5, atol=1e-7)
    same = instance_inference(probs, low, topk=5, resize=lambda m: m, output_size=(6, 8))  # identity resize
    assert torch.equal(low, kept) and torch.equal(same.pred_masks, _reference_instances(probs, low, 5)[0])


def test_instance_inference_nothing_kept_and_resize_needs_size():
    probs, low = torch.rand(3, 2), torch.randn(3, 4, 4)
    got = instance_inference(probs, low, topk=4, thing_ids=[], resize=lambda m: m, output_size=(9, 9))
    assert got.pred_masks.shape == (0, 9, 9) and got.scores.shape == (0,)
    with pytest.raises(ValueError, match="output_size"):
        instance_inference(probs, low, topk=4, resize=lambda m: m)


def test_mask_scores_with_given_binary_equals_recomputed():
    logits = torch.randn(5, 7, 9)
    torch.testing.assert_close(mask_scores(logits, logits > 0), mask_scores(logits))


def test_model_low_res_postprocessing_equals_upsample_everything_first(repo_dir):
    """MaskFormer's instance-only path (upsample kept masks only) == upsampling all masks, then
    the shared post-processing, with padding and an original size different from the input."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu"])).eval()
    assert model.instance_on and not (model.semantic_on or model.panoptic_on)
    gen = torch.Generator().manual_seed(5)
    q = model.num_queries
    probs = torch.rand(q, 1, generator=gen)
    low = torch.randn(q, 16, 16, generator=gen)
    kwargs = dict(image_size=(50, 60), height=100, width=120)
    fast = model.postprocess_low_res(probs, low, padded_size=(64, 64), **kwargs)["instances"]
    full = F.interpolate(low[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
    slow = model.postprocess_image(probs, full, **kwargs)["instances"]
    assert fast.image_size == slow.image_size == (100, 120)
    assert torch.equal(fast.pred_masks, slow.pred_masks)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-5, atol=1e-7)


# -- bf16 inference option -------------------------------------------------------------------
def test_bf16_refuses_cleanly_without_native_units(repo_dir, caplog):
    ok, why = bf16_support(flags={"avx2", "fma"})
    assert not ok and "amx_bf16" in why and "fp32" in why and "\n" not in why
    assert bf16_support(flags={"avx2", "amx_bf16"}) == (True, "")
    model = build_model(setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu"])).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(Bf16Unsupported, match="amx_bf16"):
        convert_for_bf16_inference(model, flags=set())
    cfg = setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu", "TEST.BF16_WEIGHTS", "True"])
    with caplog.at_level(logging.WARNING):
        assert apply_test_precision(cfg, model, flags=set()) == "fp32"
    assert any("TEST.BF16_WEIGHTS" in r.getMessage() and "amx_bf16" in r.getMessage() for r in caplog.records)
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    assert apply_test_precision(setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu"]), model) == "fp32"


@pytest.mark.skipif(not bf16_support()[0], reason="this CPU has no native bf16 matrix units")
def test_bf16_inference_close_to_fp32_and_weights_converted_once(repo_dir):
    torch.manual_seed(0)
    model = build_model(setup_cfg(str(repo_dir / SYNTHETIC), ["MODEL.DEVICE", "cpu"])).eval()
    x = [{"image": torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(6)) * 255}]
    with torch.no_grad():
        ref = model.predict_queries(x)[0]
    convert_for_bf16_inference(model)
    convert_for_bf16_inference(model)  # a second call changes nothing
    linear = model.sem_seg_head.predictor.class_embed
    assert linear.weight.dtype == torch.bfloat16
    assert all(n.weight.dtype == torch.float32 for n in model.modules() if isinstance(n, torch.nn.LayerNorm))
    with torch.no_grad():
        got = model.predict_queries(x)[0]
        out = model(x)[0]["instances"]
    assert linear.weight.dtype == torch.bfloat16  # not re-converted per call
    assert got["pred_masks"].dtype == torch.float32 and out.scores.dtype == torch.float32
    agree = ((got["pred_masks"] > 0) == (ref["pred_masks"] > 0)).float().mean()
    assert agree > 0.97
    obj = got["pred_logits"].softmax(-1)[:, 0] - ref["pred_logits"].softmax(-1)[:, 0]
    assert obj.abs().max() < 0.05
