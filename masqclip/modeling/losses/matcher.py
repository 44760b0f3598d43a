"""Hungarian matching of predicted queries to ground-truth masks (Mask2Former's set matching)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ...utils.precision import full_precision
from .point_features import pairwise_dice, point_sample, random_point_coords

__all__ = ["HungarianMatcher", "pairwise_sigmoid_bce"]


def pairwise_sigmoid_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid binary cross-entropy of every prediction row against every target row.

    Args:
        logits: [..., Q, P] mask logits at P points (leading dims broadcast).
        targets: [N, P] target values in [0, 1] at the same points.

    Returns:
        [..., Q, N] costs: ``mean_p BCE(logits[q, p], targets[n, p])``.
    """
    # BCE(x, t) = softplus(x) - x * t: one softplus and one matmul for all pairs
    num_points = logits.shape[-1]
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.transpose(0, 1)) / num_points


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets minimising class + mask BCE + dice costs.

    Cost of query q for target n: ``cost_class * (-p_q(label_n)) + cost_mask * BCE + cost_dice *
    (1 - dice)``, the two mask terms computed on the same ``num_points`` uniformly random points
    (one draw per image, shared by its predictions and targets; drawn for the whole batch at once
    as one [B, P, 2] tensor). Dice uses +1 smoothing. The costs of all images are computed in a
    few batched operations, then one ``linear_sum_assignment`` runs per image.
    """

    def __init__(self, *, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(self, pred_logits: Tensor, pred_masks: Tensor, targets: list[dict[str, Tensor]],
                    coords: Tensor) -> Tensor:
        """Matching cost of every query of every image against every target of the batch.

        Args:
            pred_logits: [B, Q, C+1] class logits.
            pred_masks: [B, Q, h, w] mask logits.
            targets: B dicts with "labels" int64 [N_b] and "masks" [N_b, H, W] (bool or float)
                covering the same extent as ``pred_masks``.
            coords: [B, P, 2] normalised ``(x, y)`` points, row b shared by image b's masks.

        Returns:
            float32 [B, Q, sum N_b]; image b's block is columns ``sum(N_<b) : sum(N_<=b)``
            (the other columns pair queries with another image's targets and are ignored).
        """
        labels = torch.cat([t["labels"] for t in targets]).to(pred_logits.device)
        cost_class = -pred_logits.float().softmax(-1)[:, :, labels]  # [B, Q, S]
        pred_pts = point_sample(pred_masks.float(), coords)  # [B, Q, P]: queries as channels
        tgt_pts = torch.cat([
            point_sample(t["masks"][:, None].to(pred_pts), coords[b:b + 1].expand(len(t["labels"]), -1, -1))[:, 0]
            for b, t in enumerate(targets) if len(t["labels"])
        ])  # [S, P]
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
        counts = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(counts) == 0:
            return [(empty, empty.clone()) for _ in targets]
        coords = random_point_coords(len(targets), self.num_points, device=pred_masks.device)
        with full_precision(pred_masks):  # matching costs in fp32 whatever autocast is on outside
            cost = self.cost_matrix(pred_logits.float(), pred_masks.float(), targets, coords).cpu()
        if not bool(torch.isfinite(cost).all()):
            raise FloatingPointError("the matching cost holds NaN/inf (diverged predictions or a cost weight out of range)")
        cost = cost.numpy()
        indices, start = [], 0
        for b, n in enumerate(counts):
            if n == 0:
                indices.append((empty, empty.clone()))
                continue
            src, tgt = linear_sum_assignment(cost[b, :, start:start + n])
            indices.append((torch.as_tensor(src, dtype=torch.int64), torch.as_tensor(tgt, dtype=torch.int64)))
            start += n
        return indices

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
                f"num_points={self.num_points}")
