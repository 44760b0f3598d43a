"""Small building blocks shared by the backbone and the pixel decoder (detectron2 naming).

``Conv2d`` carries an optional ``norm`` and ``activation`` so parameter names come out as
``<conv>.weight`` / ``<conv>.norm.weight``, exactly as detectron2 checkpoints store them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# GroupNorm group count used by detectron2's get_norm("GN") and Mask2Former's input projections.
GN_NUM_GROUPS = 32


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (w.r.t. the input image) of one feature map."""

    channels: int
    stride: int


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all four are buffers).

    The state dict holds ``weight``, ``bias``, ``running_mean``, ``running_var`` (no
    ``num_batches_tracked``), as detectron2's FrozenBatchNorm2d does.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The affine map this layer applies per channel: ``y = x * scale + shift``. Returns: [C], [C]."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, C, H, W]. Returns: [B, C, H, W] (one pass over x)."""
        scale, shift = self.scale_shift()
        if x.dtype != scale.dtype:
            scale, shift = scale.to(x.dtype), shift.to(x.dtype)
        return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Return ``module`` with every BatchNorm2d / SyncBatchNorm replaced by a frozen copy."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen = cls(module.num_features, eps=module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new = cls.convert_frozen_batchnorm(child)
            if new is not child:
                setattr(module, name, new)
        return module


def get_norm(norm: str, out_channels: int) -> nn.Module | None:
    """A normalisation layer by detectron2 name: ``FrozenBN | BN | SyncBN | GN | ""`` (none).

    Args:
        norm: the config name.
        out_channels: channels it normalises.
    Returns:
        the module, or None for ``""``.
    """
    if not norm:
        return None
    if norm == "BN":
        return nn.BatchNorm2d(out_channels)
    if norm == "SyncBN":
        # Plain BN where no process group exists (CPU, single process); SyncBN otherwise.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return nn.SyncBatchNorm(out_channels) if distributed else nn.BatchNorm2d(out_channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(out_channels)
    if norm == "GN":
        return nn.GroupNorm(GN_NUM_GROUPS, out_channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of FrozenBN, BN, SyncBN, GN or ''")


def _onednn_conv(x: torch.Tensor, kh: int, kw: int, groups: int) -> bool:
    """Whether PyTorch runs this fp32 CPU convolution with oneDNN (which takes a channels-last weight
    as it is) rather than its native kernel (which copies such a weight to NCHW on every call).

    Mirrors PyTorch's own choice for a non-1x1 kernel: oneDNN for a batch above 1, grouped or larger
    than 3x3 kernels, or an input above 20480 elements. A wrong guess costs a copy, never a result.
    """
    return x.shape[0] > 1 or groups > 1 or (kh > 3 and kw > 3) or x.numel() > 20480


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` module and ``activation`` callable."""

    def __init__(self, *args, norm: nn.Module | None = None, activation: Callable | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def folded_weight_bias(self, memory_format: torch.memory_format = torch.preserve_format
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of this conv with its FrozenBatchNorm2d folded in (computed, never stored).

        ``conv(x, w * scale, b * scale + shift) == norm(conv(x, w, b))``; the parameters and the
        state dict stay as they are. ``memory_format``: the folded weight's layout (channels-last
        for a channels-last input, so the convolution does not re-lay it out).
        """
        scale, shift = self.norm.scale_shift()
        scale_w = scale.to(self.weight.dtype).view(-1, 1, 1, 1)
        if memory_format is torch.preserve_format:
            weight = self.weight * scale_w
        else:  # written in that layout in the same pass (no gradient: out= is not differentiable)
            weight = torch.mul(self.weight, scale_w, out=torch.empty_like(self.weight, memory_format=memory_format))
        bias = shift if self.bias is None else torch.addcmul(shift, self.bias, scale)
        return weight, bias.to(self.weight.dtype)

    def _cached_fold(self, memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`folded_weight_bias` computed once and kept while the tensors it reads are unchanged.

        Inference folds the same weights on every call; on small inputs (the synthetic world's test
        images) writing the folded copies cost more than the convolutions. The key holds each source
        tensor's storage and version counter, so loading a state dict, an optimizer step, ``.to()``
        or any in-place change recomputes it. Only without autograd (the cached tensors carry no graph).
        """
        sources = (self.weight, self.bias, self.norm.weight, self.norm.bias, self.norm.running_mean,
                   self.norm.running_var)
        key = (memory_format,) + tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device)
                                       for t in sources)
        cached = self.__dict__.get("_fold_cache")
        if cached is None or cached[0] != key:
            cached = (key, self.folded_weight_bias(memory_format))
            self.__dict__["_fold_cache"] = cached  # a plain attribute: not a buffer, not in the state dict
        return cached[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, Cin, H, W]. Returns: [B, Cout, H', W']."""
        grad = torch.is_grad_enabled()
        if isinstance(self.norm, FrozenBatchNorm2d) and not (grad and self.weight.requires_grad):
            # frozen statistics, no weight gradient: one convolution instead of conv + a norm pass.
            # (Training a weight through the fold would keep a folded copy of every weight for the
            # backward pass: +13% peak memory on the R50 teacher step, for no measurable gain.)
            kh, kw = self.weight.shape[-2:]
            channels_last = (not grad and kh * kw > 1 and x.is_contiguous(memory_format=torch.channels_last)
                             and _onednn_conv(x, kh, kw, self.groups))
            layout = torch.channels_last if channels_last else torch.preserve_format
            weight, bias = self.folded_weight_bias(layout) if grad else self._cached_fold(layout)
            x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        else:
            x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            if self.norm is not None:
                x = self.norm(x)
        if self.activation is not None:
            x = F.relu_(x) if self.activation is F.relu and not grad else self.activation(x)
        return x


def c2_msra_fill(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) weights and zero bias, as Caffe2's MSRAFill."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill: uniform with a = sqrt(3 / fan_in) (kaiming_uniform, a=1), zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)
