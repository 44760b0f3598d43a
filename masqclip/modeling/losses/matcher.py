"""Hungarian matching of predicted queries to ground-truth masks (Mask2Former's set matching)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .point_features import pairwise_dice, point_sample, random_point_coords

__all__ = ["HungarianMatcher", "pairwise_sigmoid_bce"]


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid binary cross-entropy of every prediction row against every target row.

    Args:
        logits: [Q, P] mask logits at P points.
        targets: [N, P] target values in [0, 1] at the same points.

    Returns:
        [Q, N] costs: ``mean_p BCE(logits[q, p], targets[n, p])``.
    """
    num_points = logits.shape[1]
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.transpose(0, 1) + neg @ (1.0 - targets).transpose(0, 1)) / num_points


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising class + mask BCE + dice costs.

    Cost of query q for target n: ``cost_class * (-p_q(label_n)) + cost_mask * BCE + cost_dice *
    (1 - dice)``, the two mask terms computed on the same ``num_points`` uniformly random points
    (one draw per image, shared by predictions and targets). Dice uses +1 smoothing.
    """

    def __init__(self, *, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(self, logits: Tensor, masks: Tensor, labels: Tensor, tgt_masks: Tensor,
                    coords: Tensor) -> Tensor:
        """Matching cost of one image.

        Args:
            logits: [Q, C+1] class logits.
            masks: [Q, h, w] mask logits.
            labels: int64 [N] target classes.
            tgt_masks: [N, H, W] target masks (bool or float), covering the same extent as ``masks``.
            coords: [P, 2] normalised ``(x, y)`` points shared by predictions and targets.

        Returns:
            float32 [Q, N] costs.
        """
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, labels]
        # all masks of an image share the points: sample them as channels of one "image"
        pred_pts = point_sample(masks[None].float(), coords[None])[0]  # [Q, P]
        tgt_pts = point_sample(tgt_masks[None].float(), coords[None])[0]  # [N, P]
        cost_mask = pairwise_sigmoid_bce(pred_pts, tgt_pts)
        cost_dice = 1.0 - pairwise_dice(pred_pts.sigmoid(), tgt_pts, smooth=1.0)
        return self.cost_class * cost_class + self.cost_mask * cost_mask + self.cost_dice * cost_dice

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Match every image of a batch.

        Args:
            outputs: ``{"pred_logits": [B, Q, C+1], "pred_masks": [B, Q, h, w], ...}``.
            targets: B dicts ``{"labels": int64 [N_b], "masks": bool/float [N_b, H, W]}``.

        Returns:
            B pairs ``(src_idx, tgt_idx)`` of int64 [min(Q, N_b)] tensors (on CPU): query
            ``src_idx[i]`` is matched to target ``tgt_idx[i]``.
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        indices = []
        for b, target in enumerate(targets):
            labels, tgt_masks = target["labels"], target["masks"]
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            coords = random_point_coords(1, self.num_points, device=pred_masks.device)[0]
            cost = self.cost_matrix(pred_logits[b], pred_masks[b], labels, tgt_masks, coords)
            src, tgt = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(src, dtype=torch.int64), torch.as_tensor(tgt, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")
