"""Optimizer, gradient clipping and learning-rate schedules from ``SOLVER.*``.

Parameter groups: ``BACKBONE_MULTIPLIER`` scales the learning rate of every parameter under a
``backbone`` module; norm layers get ``WEIGHT_DECAY_NORM``; embeddings (``nn.Embedding`` and the
learnable query/level/positional/class/mask embeddings) get ``WEIGHT_DECAY_EMBED``; biases
``WEIGHT_DECAY_BIAS`` (None = ``WEIGHT_DECAY``) and ``BIAS_LR_FACTOR``. Frozen parameters
(``requires_grad=False``) are left out.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
# Parameters held directly (not through nn.Embedding) that are embeddings all the same.
EMBEDDING_PARAM_NAMES = ("query_embed", "query_feat", "level_embed", "positional_embedding",
                         "class_embedding", "mask_embedding", "absolute_pos_embed",
                         "relative_position_bias_table")
BACKBONE_SCOPE = "backbone"
SCHEDULERS = ("WarmupMultiStepLR", "WarmupPolyLR", "WarmupCosineLR")
WARMUP_METHODS = ("linear", "constant")


def get_param_groups(model: nn.Module, *, base_lr: float, weight_decay: float, backbone_multiplier: float = 1.0,
                     weight_decay_norm: float | None = None, weight_decay_embed: float | None = None,
                     weight_decay_bias: float | None = None, bias_lr_factor: float = 1.0) -> list[dict]:
    """Trainable parameters grouped by (lr, weight_decay), in module order.

    Args:
        model: the model; shared parameters are counted once.
        base_lr, weight_decay: the defaults.
        backbone_multiplier: lr factor for parameters inside a module named ``backbone``.
        weight_decay_norm / weight_decay_embed / weight_decay_bias: overrides (None = ``weight_decay``).
        bias_lr_factor: lr factor for biases.

    Returns:
        ``[{"params": [...], "lr": float, "weight_decay": float}, ...]`` for ``torch.optim``.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        in_backbone = BACKBONE_SCOPE in module_name.split(".")
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr, wd = base_lr, weight_decay
            if in_backbone:
                lr *= backbone_multiplier
            if isinstance(module, NORM_TYPES) and weight_decay_norm is not None:
                wd = weight_decay_norm
            elif (isinstance(module, nn.Embedding) or name in EMBEDDING_PARAM_NAMES) and weight_decay_embed is not None:
                wd = weight_decay_embed
            elif name == "bias":
                lr *= bias_lr_factor
                wd = weight_decay if weight_decay_bias is None else weight_decay_bias
            groups.setdefault((lr, wd), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in groups.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` (ADAMW | SGD) over ``get_param_groups`` of ``model``."""
    s = cfg.SOLVER
    groups = get_param_groups(model, base_lr=s.BASE_LR, weight_decay=s.WEIGHT_DECAY,
                              backbone_multiplier=s.BACKBONE_MULTIPLIER, weight_decay_norm=s.WEIGHT_DECAY_NORM,
                              weight_decay_embed=s.WEIGHT_DECAY_EMBED, weight_decay_bias=s.WEIGHT_DECAY_BIAS,
                              bias_lr_factor=s.BIAS_LR_FACTOR)
    if not groups:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    name = s.OPTIMIZER.upper()
    # foreach: one multi-tensor kernel per update term instead of a Python loop over parameters
    # (the same arithmetic, bitwise; on CPU torch only does this when asked)
    if name == "ADAMW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, foreach=True)
    if name == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV, foreach=True)
    raise ValueError(f"SOLVER.OPTIMIZER {s.OPTIMIZER!r} is not supported (ADAMW | SGD)")


def build_grad_clipper(cfg) -> Callable[[Iterable[nn.Parameter]], None] | None:
    """A function clipping the gradients of the given parameters as ``SOLVER.CLIP_GRADIENTS`` says.

    ``full_model``: one global norm over all parameters <= CLIP_VALUE; ``norm``: each parameter's
    norm; ``value``: each element to [-CLIP_VALUE, CLIP_VALUE]. None when disabled. Whole-model
    clipping uses the multi-tensor kernels (bitwise the per-parameter result, less Python).
    """
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    value, norm_type = float(c.CLIP_VALUE), float(c.NORM_TYPE)
    if c.CLIP_TYPE == "full_model":
        return lambda params: torch.nn.utils.clip_grad_norm_(list(params), value, norm_type, foreach=True)
    if c.CLIP_TYPE == "norm":
        def clip_each(params):
            for p in params:
                torch.nn.utils.clip_grad_norm_(p, value, norm_type)
        return clip_each
    if c.CLIP_TYPE == "value":
        return lambda params: torch.nn.utils.clip_grad_value_(list(params), value, foreach=True)
    raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE {c.CLIP_TYPE!r} is not supported (full_model | norm | value)")


class WarmupLR(LRScheduler):
    """lr(i) = base_lr x warmup(i) x schedule(i), stepped once per iteration.

    Schedules: ``WarmupMultiStepLR`` (gamma ** number of steps passed), ``WarmupPolyLR``
    ((1 - i/max_iter) ** power, floored at ``constant_ending`` when > 0), ``WarmupCosineLR``
    (half cosine from 1 to ``end_factor``). Warm-up over ``warmup_iters``: ``linear`` ramps from
    ``warmup_factor`` to 1, ``constant`` holds ``warmup_factor``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iter: int, name: str = "WarmupMultiStepLR",
                 steps: Iterable[int] = (), gamma: float = 0.1, power: float = 0.9, constant_ending: float = 0.0,
                 end_factor: float = 0.0, warmup_iters: int = 0, warmup_factor: float = 1.0,
                 warmup_method: str = "linear", last_epoch: int = -1):
        if name not in SCHEDULERS:
            raise ValueError(f"unknown LR scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
        if warmup_method not in WARMUP_METHODS:
            raise ValueError(f"unknown warmup method {warmup_method!r}; known: {', '.join(WARMUP_METHODS)}")
        steps = list(steps)
        if steps != sorted(steps):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {steps}")
        self.name, self.max_iter, self.steps, self.gamma = name, int(max_iter), steps, float(gamma)
        self.power, self.constant_ending, self.end_factor = float(power), float(constant_ending), float(end_factor)
        self.warmup_iters, self.warmup_factor, self.warmup_method = int(warmup_iters), float(warmup_factor), warmup_method
        super().__init__(optimizer, last_epoch)

    def multiplier(self, it: int) -> float:
        """The factor applied to every group's base lr at iteration ``it``."""
        warm = 1.0
        if it < self.warmup_iters:
            if self.warmup_method == "constant":
                warm = self.warmup_factor
            else:
                alpha = it / self.warmup_iters
                warm = self.warmup_factor * (1.0 - alpha) + alpha
        t = min(it, self.max_iter) / max(self.max_iter, 1)
        if self.name == "WarmupMultiStepLR":
            value = self.gamma ** bisect.bisect_right(self.steps, it)
        elif self.name == "WarmupPolyLR":
            value = (1.0 - t) ** self.power
            if self.constant_ending > 0:
                value = max(value, self.constant_ending)
        else:
            value = self.end_factor + (1.0 - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        return warm * value

    def get_lr(self) -> list[float]:
        factor = self.multiplier(self.last_epoch)
        return [base * factor for base in self.base_lrs]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupLR:
    """``SOLVER.LR_SCHEDULER_NAME`` with ``SOLVER.WARMUP_*``, ``STEPS``/``GAMMA``, ``POLY_LR_*``, ``BASE_LR_END``."""
    s = cfg.SOLVER
    return WarmupLR(optimizer, max_iter=s.MAX_ITER, name=s.LR_SCHEDULER_NAME, steps=s.STEPS, gamma=s.GAMMA,
                    power=s.POLY_LR_POWER, constant_ending=s.POLY_LR_CONSTANT_ENDING,
                    end_factor=s.BASE_LR_END / s.BASE_LR if s.BASE_LR else 0.0,
                    warmup_iters=s.WARMUP_ITERS, warmup_factor=s.WARMUP_FACTOR, warmup_method=s.WARMUP_METHOD)
