"""ResNet with detectron2's module tree, so d2 / Mask2Former checkpoints load by name.

Names: ``stem.conv1`` (+ ``.norm``), ``res2..res5`` lists of blocks, each block with ``conv1..conv3``
(``conv1..conv2`` for basic blocks) and an optional ``shortcut``, every conv carrying ``.norm``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Conv2d, FrozenBatchNorm2d, ShapeSpec, c2_msra_fill, get_norm
from .build import BACKBONE_REGISTRY, Backbone

# Blocks per stage (res2..res5) for each supported depth.
BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
BASIC_BLOCK_DEPTHS = (18, 34)
BOTTLENECK_EXPANSION = 4
# In training, a stage whose input map has fewer pixels than this runs its convolutions in NCHW
# instead of channels-last: oneDNN's channels-last backward is up to 2x slower on such small maps
# (measured on an AVX-512 Xeon: the miniature's res4/res5 at 96 px, 12x12 and 6x6 inputs, -5% of its
# step; the R50 teacher at 256 px keeps res4 (32x32) channels-last, -7% of its step vs NCHW).
SMALL_MAP_AREA = 16 * 16
# At inference, PyTorch convolves a single image of at most this many elements with its native kernel
# instead of oneDNN (3x3 kernels); given a channels-last input, that kernel re-lays out the weight on
# every call (the synthetic world's res4/res5: most of a 128 px test image's time), so such stages run NCHW.
NATIVE_CONV_NUMEL = 20480


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34) with an identity or 1x1 projection shortcut."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int = 1, norm: str = "BN"):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.shortcut = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                   norm=get_norm(norm, out_channels))
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, Cin, H, W]. Returns: [B, Cout, H/stride, W/stride]."""
        out = self.conv2(F.relu_(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(_residual_add(out, identity))


class BottleneckBlock(nn.Module):
    """1x1 reduce -> 3x3 (grouped, dilated) -> 1x1 expand, with the stride in the 1x1 or the 3x3."""

    def __init__(self, *, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int = 1,
                 num_groups: int = 1, norm: str = "BN", stride_in_1x1: bool = False, dilation: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                   norm=get_norm(norm, out_channels))
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
                            bias=False, groups=num_groups, dilation=dilation, norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False, norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, Cin, H, W]. Returns: [B, Cout, H/stride, W/stride]."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(_residual_add(out, identity))


class BasicStem(nn.Module):
    """7x7 stride-2 conv + norm + ReLU + 3x3 stride-2 max-pool (total stride 4)."""

    stride = 4

    def __init__(self, *, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                            norm=get_norm(norm, out_channels))
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, 3, H, W]. Returns: [B, C, H/4, W/4]."""
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _residual_add(out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``out + identity``, in place into ``out`` when no gradient is recorded (saves a buffer)."""
    return out.add_(identity) if not torch.is_grad_enabled() else out + identity


def _freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


class ResNet(Backbone):
    """Stem + stages ``res2..res5``; returns the stages named in ``out_features``."""

    def __init__(self, *, stem: BasicStem, stages: list[list[nn.Module]], out_features: list[str],
                 freeze_at: int = 0):
        super().__init__()
        self.stem = stem
        self.stage_names = [f"res{i + 2}" for i in range(len(stages))]
        unknown = set(out_features) - set(self.stage_names)
        if unknown:
            raise ValueError(f"ResNet out_features {sorted(unknown)} not among {self.stage_names}")
        self._out_features = list(out_features)
        self._out_shapes: dict[str, ShapeSpec] = {}
        stride = stem.stride
        for name, blocks in zip(self.stage_names, stages):
            self.add_module(name, nn.Sequential(*blocks))
            for block in blocks:
                stride *= block.stride
            self._out_shapes[name] = ShapeSpec(channels=blocks[-1].out_channels, stride=stride)
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> "ResNet":
        """Freeze the stem (``freeze_at >= 1``) and ``res2..res(freeze_at)``: no grads, frozen BN."""
        if freeze_at >= 1:
            _freeze(self.stem)
        for idx, name in enumerate(self.stage_names, start=2):
            if freeze_at >= idx:
                _freeze(getattr(self, name))
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: x [B, 3, H, W] normalised. Returns: {resK: [B, C_k, H/s_k, W/s_k]} for out_features."""
        outputs = {}
        # channels-last convolutions (oneDNN's native layout; no reorder per conv), at inference and
        # in training. The outputs keep that layout; every consumer is layout-agnostic.
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        training = torch.is_grad_enabled()
        for name in self.stage_names:
            if training and x.shape[-2] * x.shape[-1] < SMALL_MAP_AREA:
                x = x.contiguous()  # small maps train faster in NCHW (see SMALL_MAP_AREA)
            elif not training and x.shape[0] == 1 and x.numel() <= NATIVE_CONV_NUMEL:
                x = x.contiguous()  # PyTorch's native kernel would copy each weight to channels-last per call
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: self._out_shapes[name] for name in self._out_features}

    @staticmethod
    def make_stages(*, depth: int, stem_channels: int, res2_channels: int, norm: str, num_groups: int = 1,
                    width_per_group: int = 64, stride_in_1x1: bool = False,
                    res5_dilation: int = 1) -> list[list[nn.Module]]:
        """Blocks of res2..res5 for a detectron2 ResNet of ``depth``."""
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth {depth} not supported; choose from {sorted(BLOCKS_PER_STAGE)}")
        basic = depth in BASIC_BLOCK_DEPTHS
        if basic and (res2_channels != stem_channels or num_groups != 1 or res5_dilation != 1):
            raise ValueError(f"ResNet-{depth} (basic blocks) needs RES2_OUT_CHANNELS == STEM_OUT_CHANNELS "
                             f"({stem_channels}), NUM_GROUPS 1 and RES5_DILATION 1")
        stages: list[list[nn.Module]] = []
        in_ch, out_ch, bottleneck = stem_channels, res2_channels, num_groups * width_per_group
        for idx, n_blocks in enumerate(BLOCKS_PER_STAGE[depth]):
            dilation = res5_dilation if idx == 3 else 1
            first_stride = 1 if idx == 0 or dilation > 1 else 2
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                stride = first_stride if b == 0 else 1
                if basic:
                    blocks.append(BasicBlock(in_channels=in_ch, out_channels=out_ch, stride=stride, norm=norm))
                else:
                    blocks.append(BottleneckBlock(in_channels=in_ch, out_channels=out_ch,
                                                  bottleneck_channels=bottleneck, stride=stride,
                                                  num_groups=num_groups, norm=norm,
                                                  stride_in_1x1=stride_in_1x1, dilation=dilation))
                in_ch = out_ch
            stages.append(blocks)
            out_ch *= 2
            bottleneck *= 2
        return stages

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> "ResNet":
        r = cfg.MODEL.RESNETS
        if any(r.DEFORM_ON_PER_STAGE):
            raise ValueError("deformable convolutions (MODEL.RESNETS.DEFORM_ON_PER_STAGE) are not supported")
        stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)
        stages = cls.make_stages(depth=r.DEPTH, stem_channels=r.STEM_OUT_CHANNELS,
                                 res2_channels=r.RES2_OUT_CHANNELS, norm=r.NORM, num_groups=r.NUM_GROUPS,
                                 width_per_group=r.WIDTH_PER_GROUP, stride_in_1x1=r.STRIDE_IN_1X1,
                                 res5_dilation=r.RES5_DILATION)
        return cls(stem=stem, stages=stages, out_features=list(r.OUT_FEATURES),
                   freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """The ``build_resnet_backbone`` of detectron2 configs."""
    return ResNet.from_config(cfg, input_shape)
