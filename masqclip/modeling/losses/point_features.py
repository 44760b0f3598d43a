"""Point sampling (PointRend style) shared by the matcher, the criterion and distillation.

Masks are compared at a few thousand points instead of every pixel. Coordinates are normalised to
``[0, 1] x [0, 1]`` over the whole mask tensor as ``(x, y)`` pairs, so a prediction at 1/4 of the
padded image resolution and a target at full padded resolution are sampled at the same places.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "calculate_uncertainty",
    "get_uncertain_point_coords_with_randomness",
    "pairwise_dice",
    "point_sample",
    "random_point_coords",
]


def point_sample(input: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly sample ``input`` at normalised points (``grid_sample``, ``align_corners=False``).

    Args:
        input: float [N, C, H, W].
        coords: [N, P, 2] (or [N, Hg, Wg, 2]) ``(x, y)`` in [0, 1]; 0 and 1 are the outer edges of
            the first and last pixels. Points outside are zero-padded.

    Returns:
        [N, C, P] (or [N, C, Hg, Wg]) sampled values, in ``input``'s dtype.
    """
    flat = coords.dim() == 3
    grid = coords.unsqueeze(2) if flat else coords
    out = F.grid_sample(input, 2.0 * grid.to(input.dtype) - 1.0, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.squeeze(3) if flat else out


def random_point_coords(batch: int, num_points: int, *, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None) -> Tensor:
    """Uniformly random points.

    Returns:
        [batch, num_points, 2] ``(x, y)`` in [0, 1).
    """
    if generator is None:
        return torch.rand(batch, num_points, 2, device=device, dtype=dtype)
    # draw on the generator's device (a CPU generator stays usable for CUDA tensors)
    coords = torch.rand(batch, num_points, 2, device=generator.device, dtype=dtype, generator=generator)
    return coords.to(device) if device is not None else coords


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of a binary mask logit: ``-|logit|`` (highest at the decision boundary).

    Args:
        logits: [R, 1, ...] class-agnostic mask logits.

    Returns:
        [R, 1, ...] uncertainty scores, same shape.
    """
    return -logits.abs()


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PointRend's training point selection: mostly uncertain points plus some uniform ones.

    ``k * num_points`` uniform candidates (``k = oversample_ratio``) are scored by
    ``uncertainty_func`` on the bilinearly sampled logits; the ``beta * num_points`` most uncertain
    are kept (``beta = importance_sample_ratio``) and ``(1 - beta) * num_points`` fresh uniform
    points complete the set.

    Args:
        coarse_logits: [R, 1, h, w] mask logits.
        uncertainty_func: maps point logits [R, 1, P] to uncertainties [R, 1, P].
        num_points: points per mask, P.
        oversample_ratio: k >= 1.
        importance_sample_ratio: beta in [0, 1].
        generator: optional RNG for reproducible sampling.

    Returns:
        [R, num_points, 2] ``(x, y)`` coordinates in [0, 1].
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"need oversample_ratio >= 1 and 0 <= importance_sample_ratio <= 1, got "
                         f"{oversample_ratio}, {importance_sample_ratio}")
    num_rois, device, dtype = coarse_logits.shape[0], coarse_logits.device, coarse_logits.dtype
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    candidates = random_point_coords(num_rois, num_sampled, device=device, dtype=dtype, generator=generator)
    uncertainties = uncertainty_func(point_sample(coarse_logits, candidates))[:, 0, :]  # [R, kP]
    top = uncertainties.topk(num_uncertain, dim=1, sorted=False).indices  # [R, beta P]; order is irrelevant
    coords = candidates.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        extra = random_point_coords(num_rois, num_random, device=device, dtype=dtype, generator=generator)
        coords = torch.cat([coords, extra], dim=1)
    return coords


def pairwise_dice(a: Tensor, b: Tensor, *, smooth: float = 0.0, eps: float = 1e-6) -> Tensor:
    """Dice coefficient of every row of ``a`` with every row of ``b`` (soft or binary values).

    ``(2 <a, b> + smooth) / (sum a + sum b + smooth)``; with ``smooth = 0`` two empty rows score 0
    (``eps`` keeps the denominator positive).

    Args:
        a: [..., M, P] values in [0, 1] (leading dims broadcast).
        b: [N, P] values in [0, 1].

    Returns:
        [..., M, N] dice coefficients.
    """
    inter = a @ b.transpose(0, 1)
    denom = a.sum(-1).unsqueeze(-1) + b.sum(-1)
    return (2.0 * inter + smooth) / (denom + smooth).clamp_min(eps)
