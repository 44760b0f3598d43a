"""Point sampling and Hungarian matching: against naive re-implementations and brute force."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from masqclip.modeling.losses import (
    HungarianMatcher,
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    pairwise_dice,
    point_sample,
)


def naive_bilinear(img: torch.Tensor, x: float, y: float) -> float:
    """Sample a [H, W] image at normalised (x, y) with zero padding, pixel centres at (i + 0.5) / size."""
    h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    total = 0.0
    for dy, dx in itertools.product((0, 1), (0, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
        if 0 <= xi < w and 0 <= yi < h:
            total += weight * float(img[yi, xi])
    return total


def test_point_sample_matches_naive_bilinear():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, 5, 7, generator=g, dtype=torch.float64)
    coords = torch.rand(2, 11, 2, generator=g, dtype=torch.float64)
    coords[0, 0] = torch.tensor([0.0, 0.0], dtype=torch.float64)  # on the outer edge: half padding
    out = point_sample(img, coords)
    assert out.shape == (2, 3, 11)
    for n, c, p in itertools.product(range(2), range(3), range(11)):
        expected = naive_bilinear(img[n, c], float(coords[n, p, 0]), float(coords[n, p, 1]))
        assert float(out[n, c, p]) == pytest.approx(expected, abs=1e-9)


def test_point_sample_at_pixel_centres_is_exact_and_accepts_grids():
    img = torch.arange(12.0).reshape(1, 1, 3, 4)
    ys, xs = torch.meshgrid((torch.arange(3) + 0.5) / 3, (torch.arange(4) + 0.5) / 4, indexing="ij")
    grid = torch.stack([xs, ys], -1)[None]  # [1, 3, 4, 2]
    assert torch.allclose(point_sample(img, grid), img, atol=1e-5)
    assert torch.allclose(point_sample(img, grid.flatten(1, 2)), img.flatten(2), atol=1e-5)


def test_uncertain_points_are_the_most_uncertain_candidates_plus_random():
    logits = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    num_points, ratio, beta = 8, 3.0, 0.75
    torch.manual_seed(5)
    coords = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, num_points, ratio, beta)
    torch.manual_seed(5)  # replay the two draws the function makes
    candidates = torch.rand(3, int(num_points * ratio), 2)
    extra = torch.rand(3, num_points - int(beta * num_points), 2)
    assert coords.shape == (3, num_points, 2)
    uncertainty = -point_sample(logits, candidates)[:, 0].abs()
    n_unc = int(beta * num_points)
    for r in range(3):
        chosen = coords[r, :n_unc]
        # each chosen point is one of the candidates, and no unchosen candidate is more uncertain
        hits = [int(((candidates[r] - c).abs().sum(-1) == 0).nonzero()[0]) for c in chosen]
        assert len(set(hits)) == n_unc
        threshold = uncertainty[r, hits].min()
        others = [i for i in range(candidates.shape[1]) if i not in hits]
        assert bool((uncertainty[r, others] <= threshold).all())
        assert torch.equal(coords[r, n_unc:], extra[r])


def test_pairwise_dice_known_values():
    a = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    d = pairwise_dice(a, b)
    assert torch.allclose(d, torch.tensor([[2 / 3, 0.0], [0.0, 0.0]]))
    assert torch.allclose(pairwise_dice(a, b, smooth=1.0)[1, 0], torch.tensor(1 / 2))


def independent_cost(logits, masks, labels, tgt_masks, coords, weights):
    """Per-pair cost written without the matcher's batching tricks."""
    wc, wm, wd = weights
    q_count, n_count = logits.shape[0], labels.shape[0]
    cost = torch.zeros(q_count, n_count, dtype=torch.float64)
    prob = logits.double().softmax(-1)
    for q, n in itertools.product(range(q_count), range(n_count)):
        x = point_sample(masks[q][None, None].double(), coords[None].double())[0, 0]
        t = point_sample(tgt_masks[n][None, None].double(), coords[None].double())[0, 0]
        bce = -(t * torch.log(torch.sigmoid(x)) + (1 - t) * torch.log(1 - torch.sigmoid(x))).mean()
        s = torch.sigmoid(x)
        dice = 1 - (2 * (s * t).sum() + 1) / (s.sum() + t.sum() + 1)
        cost[q, n] = -wc * prob[q, labels[n]] + wm * bce + wd * dice
    return cost


def brute_force_min(cost: torch.Tensor) -> float:
    q_count, n_count = cost.shape
    if n_count <= q_count:
        return min(sum(float(cost[p[n], n]) for n in range(n_count))
                   for p in itertools.permutations(range(q_count), n_count))
    return min(sum(float(cost[q, p[q]]) for q in range(q_count))
               for p in itertools.permutations(range(n_count), q_count))


@pytest.mark.parametrize("seed", range(6))
def test_matcher_equals_brute_force(seed):
    g = torch.Generator().manual_seed(100 + seed)
    weights = (2.0, 5.0, 5.0)
    batch, queries, num_classes, points = 3, 5, 3, 64
    counts = [0, 3, 5] if seed % 2 == 0 else [2, 6, 1]  # incl. no targets and more targets than queries
    outputs = {"pred_logits": torch.randn(batch, queries, num_classes + 1, generator=g),
               "pred_masks": 3 * torch.randn(batch, queries, 6, 6, generator=g)}
    targets = [{"labels": torch.randint(num_classes, (n,), generator=g),
                "masks": torch.rand(n, 12, 12, generator=g) > 0.5} for n in counts]
    matcher = HungarianMatcher(cost_class=weights[0], cost_mask=weights[1], cost_dice=weights[2], num_points=points)
    torch.manual_seed(seed)
    indices = matcher(outputs, targets)
    torch.manual_seed(seed)  # the matcher draws one [B, P, 2] point set per batch
    batch_coords = torch.rand(batch, points, 2)
    for b, (src, tgt) in enumerate(indices):
        n = counts[b]
        assert src.dtype == tgt.dtype == torch.int64
        assert len(src) == len(tgt) == min(n, queries)
        assert len(set(src.tolist())) == len(src) and len(set(tgt.tolist())) == len(tgt)
        if n == 0:
            continue
        coords = batch_coords[b]
        cost = independent_cost(outputs["pred_logits"][b], outputs["pred_masks"][b], targets[b]["labels"],
                                targets[b]["masks"], coords, weights)
        got = float(cost[src, tgt].sum())
        assert got == pytest.approx(brute_force_min(cost), abs=1e-4)


def test_matcher_picks_the_obvious_assignment():
    masks = torch.full((1, 3, 8, 8), -10.0)
    masks[0, 0, :4] = 10.0  # query 0 = top half
    masks[0, 2, 4:] = 10.0  # query 2 = bottom half
    top = torch.zeros(8, 8, dtype=torch.bool)
    top[:4] = True
    outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": masks}
    targets = [{"labels": torch.zeros(2, dtype=torch.int64), "masks": torch.stack([~top, top])}]
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=256)
    src, tgt = matcher(outputs, targets)[0]
    assert dict(zip(tgt.tolist(), src.tolist())) == {0: 2, 1: 0}
