"""Equivalence of the training-step fast paths with the plain formulations they replace.

Each optimisation of the training step (forward, backward, optimizer) is compared here with the
straightforward computation, written out in the test: the multi-tensor optimizer and gradient
clipping against the per-parameter loop, the deformable-attention core's hand-written backward
against autograd of the plain formula, and the ResNet's per-stage memory layout in training
against NCHW.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine_toys import toy_cfg
from masqclip.config import get_cfg
from masqclip.engine.optim import build_grad_clipper, build_optimizer
from masqclip.modeling.backbone import build_backbone
from masqclip.modeling.backbone.resnet import SMALL_MAP_AREA
from masqclip.modeling.pixel_decoder import ms_deform_attn_core


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


# -- deformable attention core with autograd ----------------------------------------------------
def _reference_deform_core(value, shapes, locations, weights):
    """Deformable DETR's core written out: per level grid_sample, weighted sum over levels and points."""
    b, _, m, d = value.shape
    lq = locations.shape[1]
    out, start = 0, 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        start += h * w
        grid = (2 * locations[:, :, :, lvl] - 1).transpose(1, 2).reshape(b * m, lq, -1, 2)
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # [BM, D, Lq, P]
        wl = weights[:, :, :, lvl].transpose(1, 2).reshape(b * m, 1, lq, -1)
        out = out + (sampled * wl).sum(-1)
    return out.view(b, m * d, lq).transpose(1, 2)


def test_deform_attn_core_training_path_matches_the_reference_values_and_gradients():
    gen = torch.Generator().manual_seed(0)
    b, m, d, lq, n_points = 2, 3, 4, 7, 4
    shapes = [(5, 6), (3, 3), (2, 1)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(b, s, m, d, generator=gen, dtype=torch.float64)
    locations = torch.rand(b, lq, m, len(shapes), n_points, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.1
    weights = torch.rand(b, lq, m, len(shapes), n_points, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(b, lq, m * d, generator=gen, dtype=torch.float64)
    results = []
    for core in (ms_deform_attn_core, _reference_deform_core):
        inputs = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = core(inputs[0], shapes, inputs[1], inputs[2])
        out.backward(grad_out)
        results.append([out.detach()] + [t.grad for t in inputs])
    for name, ours, ref in zip(("out", "value", "locations", "weights"), *results):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12, msg=name)
    # only the weights need a gradient (frozen values): the backward skips the sampled gradient
    w = weights.clone().requires_grad_()
    ms_deform_attn_core(value, shapes, locations, w).backward(grad_out)
    torch.testing.assert_close(w.grad, results[1][3], rtol=1e-12, atol=1e-12)


# -- ResNet memory layout in training -----------------------------------------------------------
def test_resnet_training_layouts_give_the_nchw_values_and_gradients():
    """Training runs large maps channels-last and small ones (< SMALL_MAP_AREA pixels) in NCHW;
    values and gradients equal an all-NCHW run of the same network (float re-association)."""
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.NORM = "BN"
    torch.manual_seed(0)
    # Running statistics (eval mode): the layout rule follows autograd, not train mode, and batch
    # statistics over 2 small images make these gradients ill-conditioned (on 2 threads both layouts
    # land ~1e-2 of the largest gradient away from a float64 run, so they could not be compared).
    net = build_backbone(cfg).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    out = net(x)
    # 96 px: res4 gets a 12x12 input, res5 6x6 (NCHW); res2 / res3 24x24 / 12x12 outputs from larger inputs
    assert out["res2"].is_contiguous(memory_format=torch.channels_last) and not out["res2"].is_contiguous()
    assert out["res5"].is_contiguous() and 12 * 12 < SMALL_MAP_AREA
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in out.values())
    grads = torch.autograd.grad(loss, list(net.parameters()))

    # reference: the same modules applied to plain NCHW tensors, stage by stage
    ref_x = net.stem(x.contiguous())
    ref = {}
    for name in net.stage_names:
        ref_x = getattr(net, name)(ref_x.contiguous())
        ref[name] = ref_x
    assert all(r.is_contiguous() for r in ref.values())
    ref_loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in ref.values())
    ref_grads = torch.autograd.grad(ref_loss, list(net.parameters()))
    for name in out:
        torch.testing.assert_close(out[name], ref[name], rtol=1e-4, atol=1e-5 * float(ref[name].detach().abs().max()))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4 * float(r.abs().max()))
