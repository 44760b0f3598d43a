"""bf16 inference on CPUs with native bf16 matrix units (``TEST.BF16_WEIGHTS``).

The weights of every matrix layer (``nn.Linear``, ``nn.Conv2d``, ``nn.MultiheadAttention``'s input
projection) are converted to bf16 ONCE, in place; a convolution followed by a frozen batch-norm gets
the norm folded in first, in fp32, then converted. The model's forward then runs under CPU bf16
autocast, which feeds those layers bf16 activations (no per-call weight cast: the weights are bf16
already) and keeps normalisation, softmax and post-processing in fp32 (their parameters stay fp32).

Inference only: a converted model is not meant to be trained or saved (its state dict holds bf16
matrices). fp32 stays the default. On a CPU without native bf16 matrix units (Intel AMX
``amx_bf16``) bf16 is emulated and slower than fp32: :func:`bf16_support` says so and
:func:`convert_for_bf16_inference` refuses.
"""
from __future__ import annotations

import functools
import logging
import platform

import torch
from torch import nn

from ..utils.precision import CPU_BF16_FLAG, cpu_native_bf16
from .layers import Conv2d, FrozenBatchNorm2d

__all__ = ["Bf16Unsupported", "apply_test_precision", "bf16_support", "convert_for_bf16_inference",
           "is_bf16_converted"]


class Bf16Unsupported(RuntimeError):
    """bf16 inference was asked for where it would be slower than fp32 (or impossible)."""


def bf16_support(flags: set[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU multiplies bf16 matrices natively.

    Args:
        flags: CPU feature flags (default: this machine's, from ``/proc/cpuinfo``).
    Returns:
        ``(True, "")`` or ``(False, reason)``, the reason one line for the user.
    """
    if cpu_native_bf16(flags):
        return True, ""
    cpu = platform.processor() or platform.machine() or "this CPU"
    return False, (f"bf16 inference needs native bf16 matrix units (Intel AMX, CPU flag '{CPU_BF16_FLAG}'), which "
                   f"{cpu} lacks: bf16 would be emulated and slower than fp32; running in fp32")


def is_bf16_converted(model: nn.Module) -> bool:
    return bool(getattr(model, "_bf16_inference", False))


def _convert_module(module: nn.Module) -> None:
    if isinstance(module, Conv2d) and isinstance(module.norm, FrozenBatchNorm2d):
        with torch.no_grad():
            weight, bias = module.folded_weight_bias()  # fp32
        module.weight = nn.Parameter(weight.to(torch.bfloat16), requires_grad=False)
        module.bias = nn.Parameter(bias.to(torch.bfloat16), requires_grad=False)
        module.norm = None  # folded
        return
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        module.weight.data = module.weight.data.to(torch.bfloat16)
        if module.bias is not None:
            module.bias.data = module.bias.data.to(torch.bfloat16)
    elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
        module.in_proj_weight.data = module.in_proj_weight.data.to(torch.bfloat16)
        if module.in_proj_bias is not None:
            module.in_proj_bias.data = module.in_proj_bias.data.to(torch.bfloat16)


def _to_float(obj):
    """Floating tensors (also inside dicts, lists, tuples) as fp32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if isinstance(obj, dict):
        return {k: _to_float(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_to_float(v) for v in obj)
    return obj


def _bf16_forward(forward, *args, **kwargs):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return _to_float(forward(*args, **kwargs))


def convert_for_bf16_inference(model: nn.Module, *, flags: set[str] | None = None) -> nn.Module:
    """Convert ``model`` (on the CPU, weights loaded) for bf16 inference, in place; see the module doc.

    Also wraps ``model.forward`` and, where present, ``model.predict_queries`` in bf16 autocast
    (their floating outputs come back as fp32). Converting twice is a no-op.

    Args:
        model: the model, after its weights are loaded.
        flags: CPU feature flags (default: this machine's).
    Returns:
        ``model``, in eval mode.
    Raises:
        Bf16Unsupported: the CPU has no native bf16 matrix units, or the model is not on the CPU.
    """
    ok, why = bf16_support(flags)
    if not ok:
        raise Bf16Unsupported(why)
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise Bf16Unsupported("bf16 weights inference (TEST.BF16_WEIGHTS) is for CPU models; on a GPU use autocast")
    if is_bf16_converted(model):
        return model
    model.eval()
    for module in list(model.modules()):
        _convert_module(module)
    for name in ("forward", "predict_queries"):
        method = getattr(model, name, None)
        if method is not None:
            setattr(model, name, functools.partial(_bf16_forward, method))
    model._bf16_inference = True
    return model


def apply_test_precision(cfg, model: nn.Module, *, flags: set[str] | None = None) -> str:
    """``TEST.BF16_WEIGHTS`` for an inference model whose weights are loaded.

    Returns:
        ``"bf16"`` or ``"fp32"``. When bf16 was asked for but cannot be used (no AMX, a GPU model)
        one line saying why is logged and the model stays fp32.
    """
    if not cfg.TEST.BF16_WEIGHTS:
        return "fp32"
    try:
        convert_for_bf16_inference(model, flags=flags)
    except Bf16Unsupported as exc:
        logging.getLogger(__name__).warning("TEST.BF16_WEIGHTS: %s", exc)
        return "fp32"
    logging.getLogger(__name__).info("TEST.BF16_WEIGHTS: matrix weights converted to bf16 for inference")
    return "bf16"
