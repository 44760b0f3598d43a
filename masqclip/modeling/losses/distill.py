"""Progressive distillation: which of a frozen teacher's masks become extra student targets.

docs/method.md#stage-b-progressive-distillation. For one image, the teacher's instance predictions (binary mask =
logit > 0 at the ground-truth mask resolution; score = object probability x mean mask probability
inside the mask) are kept when ``score > alpha`` and their dice with EVERY ground-truth mask is
``< beta``; the survivors are de-duplicated by greedy dice-NMS at ``beta`` in descending score
order. Both tests use the smoothed dice ``(2|A n B| + 1) / (|A| + |B| + 1)`` on uniformly random
points (so two tiny masks that share no point still reach dice >= beta when few points fall in
them: a tiny teacher mask next to a tiny ground-truth mask is dropped); the ground-truth test and
the NMS each draw their own point sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..postprocess import mask_scores
from .point_features import pairwise_dice, point_sample, random_point_coords

__all__ = ["DICE_SMOOTH", "dice_nms", "select_distill_targets"]

DICE_SMOOTH = 1.0  # the "+ 1" in numerator and denominator of the selection's dice


def dice_nms(points: Tensor, scores: Tensor, threshold: float, *, smooth: float = DICE_SMOOTH) -> Tensor:
    """Greedy NMS with dice overlap: visit masks by descending score, keep one whose dice with
    every already-kept mask is below ``threshold``.

    Args:
        points: [M, P] mask values at shared points.
        scores: [M].
        threshold: dice at or above which a lower-scored mask is suppressed.
        smooth: added to the dice's numerator and denominator (1: the selection's smoothed dice).

    Returns:
        int64 [K] indices of the kept masks, by descending score.
    """
    order = scores.argsort(descending=True)
    dice = pairwise_dice(points[order], points[order], smooth=smooth)
    kept: list[int] = []
    for i in range(order.numel()):
        if all(float(dice[i, j]) < threshold for j in kept):
            kept.append(i)
    return order[torch.as_tensor(kept, dtype=torch.int64, device=order.device)]


@torch.no_grad()
def select_distill_targets(
    mask_logits: Tensor,
    object_probs: Tensor,
    gt_masks: Tensor,
    *,
    score_threshold: float,
    nms_threshold: float,
    num_points: int,
    valid_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Teacher masks of one image to add as class-agnostic ground truth.

    Since score <= object probability, queries with ``object_probs <= score_threshold`` are
    dropped before their masks are resized (same result, far less memory).

    Args:
        mask_logits: [Q, h, w] teacher mask logits (bilinearly resized to the gt resolution first
            when h, w differ from it; both must cover the same image extent).
        object_probs: [Q] teacher object probabilities (``object_scores`` of the 2-way logits).
        gt_masks: bool/float [N, H, W] ground-truth masks (N may be 0).
        score_threshold: alpha; keep masks with score > alpha.
        nms_threshold: beta; keep masks with dice < beta against every gt mask, NMS at beta.
        num_points: size of each random point sample for dice (one for the ground-truth test,
            a fresh one for the NMS).
        valid_size: optional ``(h, w)`` of the real image inside a zero-padded [H, W] extent:
            teacher mask pixels outside it are ignored (never selected, not in the score).
        generator: optional RNG for the point samples (drawn in that order: ground-truth test, NMS).

    Returns:
        bool [M, H, W] selected masks, by descending score (M may be 0).
    """
    height, width = gt_masks.shape[-2:]
    probs = object_probs.float()
    candidates = (probs > score_threshold).nonzero().flatten()
    if candidates.numel() == 0:
        return torch.zeros((0, height, width), dtype=torch.bool, device=mask_logits.device)
    logits = mask_logits[candidates].float()
    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    if valid_size is not None:
        logits[:, valid_size[0]:, :] = float("-inf")
        logits[:, :, valid_size[1]:] = float("-inf")
    binary = logits > 0  # [M, H, W]
    scores = probs[candidates] * mask_scores(logits)
    confident = scores > score_threshold
    binary, scores = binary[confident], scores[confident]
    if scores.numel() == 0:
        return binary
    gt_coords = random_point_coords(1, num_points, device=binary.device, generator=generator)
    nms_coords = random_point_coords(1, num_points, device=binary.device, generator=generator)
    if gt_masks.shape[0]:
        pred_points = point_sample(binary[None].float(), gt_coords)[0]  # [M, P]
        gt_points = point_sample(gt_masks[None].to(pred_points.device, torch.float32), gt_coords)[0]  # [N, P]
        novel = (pairwise_dice(pred_points, gt_points, smooth=DICE_SMOOTH) < nms_threshold).all(1)
        binary, scores = binary[novel], scores[novel]
    if scores.numel() <= 1:
        return binary
    pred_points = point_sample(binary[None].float(), nms_coords)[0]
    return binary[dice_nms(pred_points, scores, nms_threshold)]
