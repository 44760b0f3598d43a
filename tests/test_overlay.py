"""Prediction overlays (masqclip.overlay): outlines keep the segment's own colours, tags stay inside
the image without overlapping, and the legend lists every segment with its class and score."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from masqclip.overlay import anchor_point, draw_overlay, outline, place_tags


def _overlaps(a, b):
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def test_outline_is_the_border_band_of_the_mask():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    ring = outline(mask, 1)
    assert ring.sum() == 36 - 16 and not ring[3:7, 3:7].any() and ring[2, 2:8].all()
    edge = np.zeros((5, 5), bool)
    edge[:, :] = True
    assert outline(edge, 1).sum() == 25 - 9  # the image's edge is a border too


def test_anchor_of_a_ring_lies_on_the_ring():
    yy, xx = np.mgrid[:41, :41]
    ring = np.abs(np.hypot(yy - 20, xx - 20) - 15) < 2
    x, y = anchor_point(ring)
    assert ring[int(y), int(x)]


def test_tags_never_overlap_and_stay_inside_even_when_crowded_at_an_edge():
    anchors = [(0.0, 0.0)] * 15 + [(99.0, 59.0)] * 3
    boxes = place_tags(anchors, [(12, 14)] * len(anchors), (100, 60))
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[2] <= 100 and 0 <= a[1] and a[3] <= 60
        assert not any(_overlaps(a, b) for b in boxes[:i])


@pytest.mark.parametrize("n", [3, 40])
def test_overlay_draws_a_legend_row_per_segment_in_score_order(tmp_path, n):
    h, w = 48, 64
    image = np.full((h, w, 3), 120, np.uint8)
    image[10:30, 10:30] = (220, 30, 30)  # a red object: its colour must survive inside the outline
    segments = []
    for k in range(n):
        mask = torch.zeros(h, w, dtype=torch.bool)
        if k == 0:
            mask[10:30, 10:30] = True
        else:  # small segments right of it, crowded together
            y, x = (k * 7) % 40, 36 + (k * 5) % 22
            mask[y:y + 6, x:x + 6] = True
        segments.append({"category_id": k % 4, "class": f"class {k % 4}", "score": 0.3 + 0.6 * (k == 0) + k / 1000,
                         "mask": mask})
    rows = draw_overlay(image, segments, str(tmp_path / "o.png"))
    drawn = np.asarray(Image.open(tmp_path / "o.png").convert("RGB")).astype(int)
    factor = -(-384 // h)
    assert drawn.shape[0] == h * factor and drawn.shape[1] > w * factor  # the legend sits beside the image
    assert [r["number"] for r in rows] == list(range(1, n + 1)) and rows[0]["class"] == "class 0"
    assert [r["score"] for r in rows] == sorted((s["score"] for s in segments), reverse=True)
    assert len({r["color"] for r in rows}) == min(n, 4)  # one colour per class
    for i, row in enumerate(rows):
        box = row["box"]
        assert 0 <= box[0] and box[2] <= w * factor and 0 <= box[1] and box[3] <= h * factor
        assert not any(_overlaps(box, other["box"]) for other in rows[:i])
    # Outline, not a fill: the red object's inside keeps its colour away from its tag.
    inside = drawn[15 * factor:25 * factor, 11 * factor:14 * factor]
    assert np.abs(inside - (220, 30, 30)).max() <= 2
    assert np.abs(drawn[10 * factor, 20 * factor] - (220, 30, 30)).max() > 20  # its border is drawn
