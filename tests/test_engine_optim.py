"""Optimizer parameter groups, gradient clipping and LR schedules (known values)."""
from __future__ import annotations

import math

import pytest
import torch

from engine_toys import ToyModel, toy_cfg
from masqclip.engine.optim import WarmupLR, build_grad_clipper, build_lr_scheduler, build_optimizer


def _group_of(optimizer, param):
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group
    return None


def test_param_groups_follow_solver_keys(tmp_path):
    cfg = toy_cfg(tmp_path, **{"SOLVER.BASE_LR": 1e-3, "SOLVER.WEIGHT_DECAY": 0.05, "SOLVER.BACKBONE_MULTIPLIER": 0.1,
                               "SOLVER.WEIGHT_DECAY_NORM": 0.0, "SOLVER.WEIGHT_DECAY_EMBED": 0.01})
    model = ToyModel()
    model.head.bias.requires_grad_(False)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    linear, norm = model.backbone[0], model.backbone[1]
    g = _group_of(opt, linear.weight)
    assert (g["lr"], g["weight_decay"]) == (pytest.approx(1e-4), 0.05)
    g = _group_of(opt, norm.weight)
    assert (g["lr"], g["weight_decay"]) == (pytest.approx(1e-4), 0.0)
    for embed in (model.query_embed.weight, model.level_embed):
        g = _group_of(opt, embed)
        assert (g["lr"], g["weight_decay"]) == (1e-3, 0.01)
    g = _group_of(opt, model.head.weight)
    assert (g["lr"], g["weight_decay"]) == (1e-3, 0.05)
    assert _group_of(opt, model.head.bias) is None  # frozen
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == sum(1 for p in model.parameters() if p.requires_grad)


def test_full_model_clipping_bounds_the_global_norm(tmp_path):
    cfg = toy_cfg(tmp_path, **{"SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01})
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    for p in params:
        p.grad = torch.full_like(p, 3.0)
    build_grad_clipper(cfg)(params)
    total = torch.linalg.vector_norm(torch.cat([p.grad for p in params]))
    assert total.item() == pytest.approx(0.01, rel=1e-4)
    # direction is kept
    assert torch.allclose(params[0].grad, params[1].grad[:1].expand(3))
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = False
    assert build_grad_clipper(cfg) is None


def _lrs(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_multistep_known_values(tmp_path):
    cfg = toy_cfg(tmp_path, **{"SOLVER.BASE_LR": 1.0, "SOLVER.MAX_ITER": 10, "SOLVER.STEPS": (6, 8),
                               "SOLVER.WARMUP_ITERS": 4, "SOLVER.WARMUP_FACTOR": 0.5, "SOLVER.GAMMA": 0.1})
    lrs = _lrs(build_lr_scheduler(cfg, _opt()), 10)
    expected = [0.5, 0.625, 0.75, 0.875, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    assert lrs == pytest.approx(expected)


def test_constant_warmup_poly_and_cosine():
    s = WarmupLR(_opt(), max_iter=10, name="WarmupPolyLR", power=0.9, warmup_iters=2, warmup_factor=0.1,
                 warmup_method="constant")
    lrs = _lrs(s, 10)
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.1 * 0.9 ** 0.9)
    assert lrs[5] == pytest.approx(0.5 ** 0.9)
    floored = WarmupLR(_opt(), max_iter=10, name="WarmupPolyLR", power=1.0, constant_ending=0.3)
    assert min(_lrs(floored, 10)) == pytest.approx(0.3)
    cos = _lrs(WarmupLR(_opt(), max_iter=10, name="WarmupCosineLR", end_factor=0.2), 11)
    assert cos[0] == pytest.approx(1.0) and cos[5] == pytest.approx(0.2 + 0.8 * 0.5) and cos[10] == pytest.approx(0.2)
    assert cos[3] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.3)))


def test_scheduler_state_round_trip_and_bad_names():
    a = WarmupLR(_opt(), max_iter=20, steps=(5,), warmup_iters=3, warmup_factor=0.2)
    _lrs(a, 7)
    b = WarmupLR(_opt(), max_iter=20, steps=(5,), warmup_iters=3, warmup_factor=0.2)
    b.load_state_dict(a.state_dict())
    assert _lrs(a, 5) == _lrs(b, 5)
    with pytest.raises(ValueError, match="unknown LR scheduler"):
        WarmupLR(_opt(), max_iter=10, name="StepLR")
    with pytest.raises(ValueError, match="warmup method"):
        WarmupLR(_opt(), max_iter=10, warmup_method="exp")
