"""Mask2Former's set criterion: class cross-entropy and point-sampled mask losses after matching."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ...utils.precision import full_precision
from .matcher import HungarianMatcher
from .point_features import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = ["SetCriterion", "dice_loss", "sigmoid_bce_loss"]


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """Sigmoid BCE averaged over points, summed over masks, divided by ``num_masks``.

    Args:
        logits: [M, P] mask logits at points.
        targets: [M, P] target values in [0, 1].
        num_masks: normaliser (number of ground-truth masks in the batch, >= 1).

    Returns:
        scalar loss.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float | Tensor) -> Tensor:
    """``1 - dice`` (+1 smoothing) of sigmoid(logits) with targets, summed over masks / ``num_masks``.

    Args:
        logits: [M, P] mask logits at points.
        targets: [M, P] target values in [0, 1].
        num_masks: normaliser (>= 1).

    Returns:
        scalar loss.
    """
    probs = logits.sigmoid()
    numerator = 2.0 * (probs * targets).sum(-1) + 1.0
    denominator = probs.sum(-1) + targets.sum(-1) + 1.0
    return (1.0 - numerator / denominator).sum() / num_masks


class SetCriterion(nn.Module):
    """Matches predictions to targets, then computes unweighted ``loss_ce``/``loss_mask``/``loss_dice``.

    Class weights: ``empty_weight`` (a persistent buffer, ``num_classes + 1`` entries, the last
    ``eos_coef``) weights the cross-entropy when ``pred_logits`` has ``num_classes + 1`` columns.
    MasQ-Tuning configs set ``num_classes`` to the vocabulary size while the decoder still predicts
    2 columns (object, no-object); then the cross-entropy over the C+1 columns present uses
    ``[1] * C + [eos_coef]`` (the buffer only keeps the checkpoint layout). Target labels must index
    the columns present (class-agnostic targets are 0). The last column is always "no object".

    The returned losses are NOT multiplied by ``weight_dict``; the meta-architecture applies it
    (``weight_dict`` is kept here so the two travel together).
    """

    LOSS_NAMES = ("labels", "masks")

    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float],
                 eos_coef: float, losses: Iterable[str] = ("labels", "masks"), num_points: int,
                 oversample_ratio: float, importance_sample_ratio: float):
        super().__init__()
        unknown = set(losses) - set(self.LOSS_NAMES)
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}; known: {self.LOSS_NAMES}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.eos_coef = eos_coef
        self.losses = tuple(losses)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=True)

    # -- class loss -------------------------------------------------------------------------
    def class_weight(self, num_columns: int) -> Tensor:
        """CE weights for ``num_columns`` logit columns (last = no-object). Returns: [num_columns]."""
        if num_columns == self.empty_weight.numel():
            return self.empty_weight
        weight = torch.ones(num_columns, device=self.empty_weight.device, dtype=self.empty_weight.dtype)
        weight[-1] = self.eos_coef
        return weight

    def loss_labels(self, outputs: dict, targets: list[dict], indices: list, num_masks: Tensor) -> dict[str, Tensor]:
        """Weighted CE over all B*Q queries; unmatched queries target the no-object column."""
        logits = outputs["pred_logits"].float()  # [B, Q, C+1]
        no_object = logits.shape[-1] - 1
        target_classes = torch.full(logits.shape[:2], no_object, dtype=torch.int64, device=logits.device)
        for b, (src, tgt) in enumerate(indices):
            labels = targets[b]["labels"][tgt].to(logits.device)
            if labels.numel() and int(labels.max()) >= no_object:
                raise ValueError(f"target label {int(labels.max())} does not fit {no_object} class "
                                 f"column(s) of pred_logits (plus no-object)")
            target_classes[b, src.to(logits.device)] = labels
        weight = self.class_weight(logits.shape[-1]).to(logits.device)
        return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, weight)}

    # -- mask losses ------------------------------------------------------------------------
    def loss_masks(self, outputs: dict, targets: list[dict], indices: list, num_masks: Tensor) -> dict[str, Tensor]:
        """Sigmoid BCE and dice on importance-sampled points of every matched (query, target)."""
        pred_masks = outputs["pred_masks"]  # [B, Q, h, w]
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        src_masks = pred_masks[batch_idx.to(pred_masks.device), src_idx.to(pred_masks.device)][:, None].float()
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src_masks, calculate_uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio)  # [M, P, 2]
            labels, start = [], 0
            for b, (_, tgt) in enumerate(indices):  # per image: target sizes may differ
                n = tgt.numel()
                if n:
                    tgt_masks = targets[b]["masks"][tgt.to(targets[b]["masks"].device)]
                    tgt_masks = tgt_masks.to(device=src_masks.device, dtype=src_masks.dtype)[:, None]
                    labels.append(point_sample(tgt_masks, coords[start:start + n])[:, 0])
                start += n
            point_labels = torch.cat(labels) if labels else src_masks.new_zeros(0, self.num_points)
        point_logits = point_sample(src_masks, coords)[:, 0]  # [M, P]
        return {
            "loss_mask": sigmoid_bce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
        }

    def _loss_fn(self, name: str) -> Callable:
        return {"labels": self.loss_labels, "masks": self.loss_masks}[name]

    # -- forward ----------------------------------------------------------------------------
    def num_masks(self, targets: list[dict], device: torch.device) -> Tensor:
        """Total target masks, averaged over processes when torch.distributed runs; at least 1."""
        total = torch.as_tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            total = total / dist.get_world_size()
        return total.clamp(min=1.0)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        """Unweighted losses of the final prediction and of every auxiliary (deep-supervision) one.

        Args:
            outputs: ``{"pred_logits": [B, Q, C+1], "pred_masks": [B, Q, h, w],
                "aux_outputs": [ {same two keys}, ... ] (optional)}``.
            targets: B dicts ``{"labels": int64 [N_b], "masks": bool/float [N_b, H, W]}``; masks
                cover the same (padded) extent as the predicted masks.

        Returns:
            ``loss_ce``, ``loss_mask``, ``loss_dice`` (for the losses enabled) plus ``loss_ce_{i}``
            etc. for ``outputs["aux_outputs"][i]``; scalar tensors.
        """
        num_masks = self.num_masks(targets, outputs["pred_logits"].device)
        # convert bool masks to float once, not once per decoder level in the matcher and the loss
        targets = [{**t, "masks": t["masks"].to(torch.float32)} for t in targets]
        levels = [("", outputs)] + [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        losses: dict[str, Tensor] = {}
        with full_precision(num_masks):  # matching and point-sampled losses stay fp32 under autocast
            for suffix, out in levels:
                indices = self.matcher(out, targets)
                for name in self.losses:
                    for key, value in self._loss_fn(name)(out, targets, indices, num_masks).items():
                        losses[key + suffix] = value
        return losses

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, eos_coef={self.eos_coef}, losses={self.losses}, "
                f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
                f"importance_sample_ratio={self.importance_sample_ratio}")
