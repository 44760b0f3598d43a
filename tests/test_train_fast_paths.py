"""Equivalence of the training-step fast paths with the plain formulations they replace.

Each optimisation of the training step (forward, backward, optimizer) is compared here with the
straightforward computation, written out in the test: the multi-tensor optimizer and gradient
clipping against the per-parameter loop, and the seeded losses and gradients of a whole model.
"""
from __future__ import annotations

import torch

from engine_toys import toy_cfg
from masqclip.engine.optim import build_grad_clipper, build_optimizer


# -- optimizer and clipping -----------------------------------------------------------------
class _Params(torch.nn.Module):
    def __init__(self, gen: torch.Generator):
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 5)
        for p in self.parameters():
            p.data.copy_(torch.randn(p.shape, generator=gen))


def _set_grads(model: torch.nn.Module, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_multi_tensor_adamw_and_clipping_equal_the_per_parameter_loop_bitwise(tmp_path):
    cfg = toy_cfg(tmp_path, **{"SOLVER.BASE_LR": 1e-2, "SOLVER.WEIGHT_DECAY": 0.05, "SOLVER.WEIGHT_DECAY_NORM": 0.0,
                               "SOLVER.BACKBONE_MULTIPLIER": 0.1, "SOLVER.CLIP_GRADIENTS.ENABLED": True,
                               "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
                               "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.5})
    ours, ref = _Params(torch.Generator().manual_seed(0)), _Params(torch.Generator().manual_seed(0))
    opt = build_optimizer(cfg, ours)
    assert all(g["foreach"] for g in opt.param_groups)
    clip = build_grad_clipper(cfg)
    # the reference: the same groups, torch's single-tensor loop, clipping written out
    ref_opt = torch.optim.AdamW([{**g, "params": [dict(ref.named_parameters())[n] for n, p in ours.named_parameters()
                                                  if any(p is q for q in g["params"])], "foreach": False}
                                 for g in opt.param_groups], lr=cfg.SOLVER.BASE_LR)
    for step in range(4):
        _set_grads(ours, step)
        _set_grads(ref, step)
        clip(list(ours.parameters()))
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ref.parameters()]))
        scale = (0.5 / (total + 1e-6)).clamp(max=1.0)
        for p in ref.parameters():
            p.grad.mul_(scale)
        opt.step()
        ref_opt.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name
