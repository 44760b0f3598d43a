"""Progressive-distillation target selection (and the MaskDistill student, when it can be built)."""
from __future__ import annotations

import torch

from masqclip.modeling.losses import dice_nms, select_distill_targets

H = W = 32
LOGIT = 8.0  # mean sigmoid inside a box mask = sigmoid(8) ~ 0.99966


def box(y0: int, y1: int, x0: int, x1: int, size: tuple[int, int] = (H, W)) -> torch.Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def as_logits(masks: list[torch.Tensor]) -> torch.Tensor:
    return torch.where(torch.stack(masks), LOGIT, -LOGIT)


GT = box(0, 12, 0, 12)
TEACHER = [
    box(1, 13, 1, 13),     # q0: overlaps the gt (dice ~0.84) -> dropped
    box(20, 30, 2, 10),    # q1: novel region but low object score -> dropped
    box(18, 30, 18, 30),   # q2: novel, 0.95 -> kept
    box(18, 30, 19, 30),   # q3: duplicate of q2 (dice ~0.96), 0.90 -> suppressed by NMS
    box(2, 10, 20, 30),    # q4: novel, 0.92 -> kept
    box(0, 12, 0, 11),     # q5: almost the gt, very confident -> dropped
]
PROBS = torch.tensor([0.97, 0.50, 0.95, 0.90, 0.92, 0.99])


def select(mask_logits, probs, gt, seed=0, **kw):
    params = dict(score_threshold=0.8, nms_threshold=0.1, num_points=4096)
    params.update(kw)
    return select_distill_targets(mask_logits, probs, gt, generator=torch.Generator().manual_seed(seed), **params)


def test_selection_known_answer():
    kept = select(as_logits(TEACHER), PROBS, GT[None])
    assert kept.dtype == torch.bool and kept.shape == (2, H, W)
    assert torch.equal(kept[0], TEACHER[2]) and torch.equal(kept[1], TEACHER[4])  # by descending score


def test_selection_is_stable_across_point_samples():
    for seed in range(5):
        kept = select(as_logits(TEACHER), PROBS, GT[None], seed=seed, num_points=1024)
        assert torch.equal(kept, torch.stack([TEACHER[2], TEACHER[4]]))


def test_score_includes_mean_mask_probability():
    # a confident query (0.95) whose mask logits are weak (sigmoid 0.6 inside) scores 0.57 < 0.8
    logits = as_logits([TEACHER[2]])
    weak = torch.where(logits > 0, torch.logit(torch.tensor(0.6)), logits)
    assert select(logits, PROBS[2:3], GT[None]).shape[0] == 1
    assert select(weak, PROBS[2:3], GT[None]).shape[0] == 0


def test_without_ground_truth_only_nms_applies():
    kept = select(as_logits(TEACHER), PROBS, torch.zeros(0, H, W, dtype=torch.bool))
    # q5 (0.99) first; q0 overlaps it (suppressed); q2 kept, q3 duplicate, q4 kept; q1 low score
    assert torch.equal(kept, torch.stack([TEACHER[5], TEACHER[2], TEACHER[4]]))


def test_low_resolution_teacher_logits_are_resized_to_the_gt():
    low = [box(9, 15, 9, 15, (16, 16)), box(1, 5, 10, 15, (16, 16))]  # novel squares at half resolution
    kept = select(as_logits(low), torch.tensor([0.95, 0.9]), GT[None])
    assert kept.shape == (2, H, W)
    assert torch.equal(kept[0], box(18, 30, 18, 30)) and torch.equal(kept[1], box(2, 10, 20, 30))


def test_nothing_above_alpha_returns_empty():
    kept = select(as_logits(TEACHER), torch.full((6,), 0.5), GT[None])
    assert kept.shape == (0, H, W) and kept.dtype == torch.bool


def test_dice_nms_greedy_order():
    points = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    # 1 beats 0 (dice 0.8 >= 0.5); 2 is disjoint from 1
    assert dice_nms(points, torch.tensor([0.5, 0.9, 0.7]), 0.5).tolist() == [1, 2]
    assert dice_nms(points, torch.tensor([0.5, 0.9, 0.7]), 0.9).tolist() == [1, 2, 0]
