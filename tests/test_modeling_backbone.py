"""ResNet backbone: torchvision equivalence through the name mapping, shapes, freezing."""
from __future__ import annotations

import pytest
import torch
import torchvision

from masqclip.checkpoint import torchvision_resnet_to_d2
from masqclip.config import get_cfg
from masqclip.modeling.backbone import build_backbone
from masqclip.modeling.layers import FrozenBatchNorm2d


def _randomise_bn_stats(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters, so the comparison tests the BN folding."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def _torchvision_trunk(tv: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    out = {}
    for i, layer in enumerate((tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
        x = layer(x)
        out[f"res{i + 2}"] = x
    return out


@pytest.mark.parametrize("depth,res2", [(50, 256), (18, 64)])
def test_torchvision_resnet_maps_onto_backbone(depth, res2):
    gen = torch.Generator().manual_seed(depth)
    torch.manual_seed(depth)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    _randomise_bn_stats(tv, gen)
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = res2
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    ours = build_backbone(cfg).eval()
    state = {k[len("backbone."):]: v for k, v in torchvision_resnet_to_d2(tv.state_dict()).items()}
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 64, 96, generator=gen)
    with torch.no_grad():
        expected = _torchvision_trunk(tv, x)
        got = ours(x)
    assert list(got) == ["res2", "res3", "res4", "res5"]
    for name, ref in expected.items():
        # float32 summation order differs between the folded and unfolded BN: tolerance scaled to the values
        torch.testing.assert_close(got[name], ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
        spec = ours.output_shape()[name]
        assert got[name].shape[1] == spec.channels
        assert x.shape[-1] // got[name].shape[-1] == spec.stride


def test_r50_names_and_strides_follow_detectron2():
    backbone = build_backbone(get_cfg())
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (256, 4), "res3": (512, 8), "res4": (1024, 16), "res5": (2048, 32)}
    names = set(backbone.state_dict())
    assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.norm.weight",
            "res5.2.conv3.norm.bias"} <= names
    assert not any("num_batches_tracked" in n for n in names)  # FrozenBN by default


def test_stride_in_1x1_moves_the_stride():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    block = build_backbone(cfg).res3[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    block = build_backbone(cfg).res3[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


@pytest.mark.parametrize("norm,kind", [("BN", torch.nn.BatchNorm2d), ("GN", torch.nn.GroupNorm), ("", None)])
def test_norm_choice(norm, kind):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = norm
    backbone = build_backbone(cfg)
    if kind is None:
        assert backbone.stem.conv1.norm is None
    else:
        assert isinstance(backbone.res2[0].conv1.norm, kind)
    out = backbone(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 512, 2, 2)


def test_freeze_at_freezes_stem_and_stages():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    backbone = build_backbone(cfg)
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.res2.parameters())
    assert all(p.requires_grad for p in backbone.res3.parameters())
    assert isinstance(backbone.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(backbone.res3[0].conv1.norm, torch.nn.BatchNorm2d)


def test_basic_blocks_refuse_wide_res2():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18  # RES2_OUT_CHANNELS stays 256
    with pytest.raises(ValueError, match="RES2_OUT_CHANNELS"):
        build_backbone(cfg)
