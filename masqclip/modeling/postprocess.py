"""The package's only semantic / panoptic / instance inference (Mask2Former's post-processing).

Every function works on ONE image. Inputs are per-query class probabilities WITHOUT a no-object
column (``class_probs`` [Q, K]) and per-query mask logits (``mask_logits`` [Q, h, w]):

- MaskFormer passes ``softmax(pred_logits)[:, :-1]`` and ``valid = argmax != no-object``;
- MasQTuning passes ``p_obj * softmax(clip_logits)[:, :K]`` ("background" dropped) and no ``valid``:
  a query whose CLIP argmax is "background" still competes when its best class passes the threshold.
"""
from __future__ import annotations

from typing import Callable, Collection

import torch
import torch.nn.functional as F
from torch import Tensor

from ..structures import Instances

__all__ = [
    "instance_inference",
    "mask_scores",
    "object_scores",
    "panoptic_inference",
    "sem_seg_postprocess",
    "semantic_inference",
    "upsample_mask_logits",
]

# Numerical guard for "mean mask probability inside the mask" of an empty mask.
_EMPTY_MASK_EPS = 1e-6
# A pixel belongs to a query's original mask when sigmoid(logit) >= this (panoptic area test).
_MASK_PROB_THRESHOLD = 0.5
# Queries resized and scored at a time by instance inference (bounds its peak memory).
INSTANCE_CHUNK = 8


def object_scores(pred_logits: Tensor) -> Tensor:
    """Object probability of class-agnostic queries: softmax over (object, no-object), column 0.

    Args:
        pred_logits: [..., Q, 2].

    Returns:
        [..., Q] probabilities.
    """
    if pred_logits.shape[-1] != 2:
        raise ValueError(f"object_scores needs 2 class columns (object, no-object), got {pred_logits.shape[-1]}")
    return pred_logits.float().softmax(-1)[..., 0]


def mask_scores(mask_logits: Tensor, binary: Tensor | None = None) -> Tensor:
    """Mean mask probability inside each binary mask (``logit > 0``); 0 for an empty mask.

    Args:
        mask_logits: [N, h, w].
        binary: optional ``mask_logits > 0`` when the caller has it already (not recomputed).

    Returns:
        [N] scores in [0, 1].
    """
    if binary is None:
        binary = mask_logits > 0
    inside = torch.where(binary, mask_logits.sigmoid(), 0.0).flatten(1).sum(1)
    count = binary.flatten(1).sum(1).to(inside.dtype)
    return inside / (count + _EMPTY_MASK_EPS)


def semantic_inference(class_probs: Tensor, mask_logits: Tensor) -> Tensor:
    """Per-class semantic score map: ``sum_q p_q(k) * sigmoid(mask_q)``.

    Args:
        class_probs: [Q, K].
        mask_logits: [Q, h, w].

    Returns:
        [K, h, w].
    """
    return torch.einsum("qk,qhw->khw", class_probs, mask_logits.sigmoid())


def panoptic_inference(
    class_probs: Tensor,
    mask_logits: Tensor,
    *,
    object_mask_threshold: float,
    overlap_threshold: float,
    thing_ids: Collection[int],
    valid: Tensor | None = None,
) -> tuple[Tensor, list[dict]]:
    """Non-overlapping panoptic segmentation (Mask2Former's algorithm).

    Queries whose best class probability exceeds ``object_mask_threshold`` (and that are
    ``valid``) compete for pixels by argmax of ``score * sigmoid(mask)``. A query keeps its
    segment only when its pixel area / its own mask area (sigmoid >= 0.5) reaches
    ``overlap_threshold``; pixels of the segment are the won pixels inside its own mask. Stuff
    segments of one class merge into one id (score = the highest of the merged).

    Args:
        class_probs: [Q, K] class probabilities (no no-object column).
        mask_logits: [Q, h, w].
        object_mask_threshold: minimum best-class probability of a query.
        overlap_threshold: minimum kept-area fraction of a segment.
        thing_ids: contiguous class ids that are "things" (never merged).
        valid: optional bool [Q]; False drops a query (e.g. argmax = no-object).

    Returns:
        ``(segments int32 [h, w], segments_info)``: 0 = void, ids 1.. in creation order; info
        entries ``{"id", "category_id", "isthing", "score"}``.
    """
    h, w = mask_logits.shape[-2:]
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=mask_logits.device)
    segments: list[dict] = []
    scores, classes = class_probs.max(-1)
    keep = scores > object_mask_threshold
    if valid is not None:
        keep &= valid.to(keep.device)
    if not bool(keep.any()):
        return panoptic, segments
    scores, classes, probs = scores[keep], classes[keep], mask_logits[keep].sigmoid()
    winner = (scores[:, None, None] * probs).argmax(0)  # [h, w]
    things = {int(t) for t in thing_ids}
    stuff_segment: dict[int, dict] = {}
    for k in range(probs.shape[0]):
        won = winner == k
        own = probs[k] >= _MASK_PROB_THRESHOLD
        won_area, own_area = int(won.sum()), int(own.sum())
        region = won & own
        if won_area == 0 or own_area == 0 or not bool(region.any()):
            continue
        if won_area / own_area < overlap_threshold:
            continue
        category, score = int(classes[k]), float(scores[k])
        isthing = category in things
        if not isthing and category in stuff_segment:
            info = stuff_segment[category]
            info["score"] = max(info["score"], score)
            panoptic[region] = info["id"]
            continue
        info = {"id": len(segments) + 1, "category_id": category, "isthing": isthing, "score": score}
        segments.append(info)
        if not isthing:
            stuff_segment[category] = info
        panoptic[region] = info["id"]
    return panoptic, segments


def instance_inference(
    class_probs: Tensor,
    mask_logits: Tensor,
    *,
    topk: int,
    thing_ids: Collection[int] | None = None,
    resize: Callable[[Tensor], Tensor] | None = None,
    output_size: tuple[int, int] | None = None,
    chunk_size: int = INSTANCE_CHUNK,
) -> Instances:
    """Top-k (query, class) pairs as instances.

    The ``topk`` highest entries of ``class_probs`` (over all Q*K pairs, highest first) become
    instances; with ``thing_ids`` the non-thing ones among them are then dropped (as Mask2Former
    does for panoptic models). Mask = logit > 0; score = class probability x mean mask
    probability inside the mask.

    The pairs are chosen first (they depend on ``class_probs`` only); then only the kept queries'
    masks are resized (``resize``), thresholded and scored, ``chunk_size`` queries at a time, so no
    float [Q, H, W] tensor of the output resolution is ever held (a query picked for several
    classes is resized once).

    Args:
        class_probs: [Q, K].
        mask_logits: [Q, h, w].
        topk: instances kept before the thing filter (clipped to Q*K).
        thing_ids: optional contiguous class ids that are things.
        resize: optional map of mask logits [n, h, w] -> [n, H, W] that treats every mask on its
            own (e.g. bilinear upsampling to the output size); default: none (H, W = h, w).
        output_size: (H, W), required with ``resize``.
        chunk_size: queries resized and scored at a time.

    Returns:
        ``Instances(image_size=(H, W), pred_masks=bool [N, H, W], pred_classes=int64 [N],
        scores=float [N])``.
    """
    num_classes = class_probs.shape[1]
    top_scores, flat_idx = class_probs.flatten().topk(min(topk, class_probs.numel()), sorted=True)
    classes = flat_idx % num_classes
    queries = torch.div(flat_idx, num_classes, rounding_mode="floor")
    if thing_ids is not None:
        is_thing = torch.zeros(num_classes, dtype=torch.bool, device=classes.device)
        is_thing[[int(t) for t in thing_ids if 0 <= int(t) < num_classes]] = True
        keep = is_thing[classes]
        top_scores, classes, queries = top_scores[keep], classes[keep], queries[keep]
    if resize is None:
        resize, output_size = (lambda x: x), tuple(mask_logits.shape[-2:])
    elif output_size is None:
        raise ValueError("instance_inference: resize needs output_size")
    unique, inverse = torch.unique(queries, return_inverse=True)
    # without repeated queries, masks are written in output order (no gather copy afterwards)
    order = queries if unique.numel() == queries.numel() else unique
    size = (int(output_size[0]), int(output_size[1]))
    masks = torch.empty((order.numel(), *size), dtype=torch.bool, device=mask_logits.device)
    quality = torch.empty(order.numel(), dtype=torch.float32, device=mask_logits.device)
    indicator = None  # the chunk's masks as 0. / 1. floats (float x float products and sums need no casts)
    for start in range(0, order.numel(), max(1, chunk_size)):
        idx = order[start:start + chunk_size]
        logits = resize(mask_logits[idx]).float()
        if not logits.is_contiguous() or logits.data_ptr() == mask_logits.data_ptr():
            logits = logits.clone(memory_format=torch.contiguous_format)  # ours to overwrite
        binary = masks[start:start + idx.numel()]
        torch.gt(logits, 0, out=binary)
        if indicator is None or indicator.shape != logits.shape:
            indicator = torch.empty_like(logits)
        torch.gt(logits, 0, out=indicator)
        # mask_scores in place on this chunk's own buffer: sigmoid inside the mask, 0 outside
        inside = logits.sigmoid_().mul_(indicator).flatten(1).sum(1)
        count = indicator.flatten(1).sum(1, dtype=torch.float64 if indicator[0].numel() >= 2 ** 24 else None)
        quality[start:start + idx.numel()] = inside / (count + _EMPTY_MASK_EPS)  # count exact: float64 past 2 ** 24
        del logits
    if order is unique:
        masks, quality = masks[inverse], quality[inverse]
    return Instances(
        size,
        pred_masks=masks,
        pred_classes=classes.to(torch.int64),
        scores=top_scores * quality.to(top_scores.dtype),
    )


def sem_seg_postprocess(result: Tensor, img_size: tuple[int, int], output_height: int, output_width: int) -> Tensor:
    """Crop the padding off a (padded-resolution) output and resize it to the original image size.

    Args:
        result: [C, H_pad, W_pad] scores or mask logits at the padded input resolution.
        img_size: ``(h, w)`` of the input image before padding.
        output_height, output_width: original image size.

    Returns:
        [C, output_height, output_width] (bilinear, ``align_corners=False``).
    """
    cropped = result[:, : img_size[0], : img_size[1]]
    if tuple(cropped.shape[-2:]) == (output_height, output_width):
        return cropped  # a same-size bilinear resize is the identity
    return F.interpolate(cropped[None], size=(output_height, output_width), mode="bilinear",
                         align_corners=False)[0]


def upsample_mask_logits(mask_logits: Tensor, padded_size: tuple[int, int], img_size: tuple[int, int],
                         output_height: int, output_width: int) -> Tensor:
    """Mask logits of the model's output grid at the original image size.

    Bilinear to the padded input size (``align_corners=False``), then ``sem_seg_postprocess``:
    every mask independently, so any subset of masks can be upsampled on its own.

    Args:
        mask_logits: [N, h, w] at 1/4 of the padded input.
        padded_size: ``(H_pad, W_pad)``; img_size: unpadded ``(h, w)``; output size: the original.

    Returns:
        [N, output_height, output_width].
    """
    padded = F.interpolate(mask_logits[None], size=tuple(padded_size), mode="bilinear", align_corners=False)[0]
    return sem_seg_postprocess(padded, img_size, output_height, output_width)
