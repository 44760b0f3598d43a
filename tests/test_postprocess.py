"""Known-answer cases for every post-processing mode."""
from __future__ import annotations

import math

import pytest
import torch

from masqclip.modeling.postprocess import (
    instance_inference,
    mask_scores,
    object_scores,
    panoptic_inference,
    sem_seg_postprocess,
    semantic_inference,
)

BIG = 20.0  # sigmoid(BIG) == 1 and sigmoid(-BIG) == 0 to float32 precision


def box_logits(h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """[len(boxes), h, w] logits: +BIG inside rows y0:y1, cols x0:x1, -BIG outside."""
    out = torch.full((len(boxes), h, w), -BIG)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = BIG
    return out


def test_object_scores():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, math.log(4.0)]])
    assert torch.allclose(object_scores(logits), torch.tensor([0.5, 0.75, 0.2]))
    assert object_scores(logits[None]).shape == (1, 3)
    with pytest.raises(ValueError):
        object_scores(torch.zeros(3, 5))


def test_semantic_inference_known_answer():
    probs = torch.tensor([[0.6, 0.2], [0.1, 0.7]])
    masks = torch.zeros(2, 1, 2)
    masks[0, 0, 0] = math.log(3.0)  # sigmoid 0.75; other pixels 0.5
    masks[1, 0, 1] = -math.log(3.0)  # sigmoid 0.25
    out = semantic_inference(probs, masks)
    expected = torch.tensor([[[0.6 * 0.75 + 0.1 * 0.5, 0.6 * 0.5 + 0.1 * 0.25]],
                             [[0.2 * 0.75 + 0.7 * 0.5, 0.2 * 0.5 + 0.7 * 0.25]]])
    assert out.shape == (2, 1, 2)
    assert torch.allclose(out, expected)


def test_panoptic_inference_known_answer():
    # 4 x 6 image; classes: 0 = thing, 1 and 2 = stuff
    h, w = 4, 6
    boxes = [
        (0, 4, 0, 2),  # q0 thing 0, 0.90: left two columns
        (0, 2, 3, 6),  # q1 stuff 1, 0.85: top right
        (2, 4, 3, 6),  # q2 stuff 1, 0.95: bottom right -> merged with q1
        (0, 4, 0, 6),  # q3 class 2, 0.30: below the object-mask threshold
        (0, 4, 1, 3),  # q4 thing 0, 0.60: wins only column 2 (4 of 8 px) -> overlap 0.5 < 0.8
        (0, 4, 0, 6),  # q5 thing 0, 0.99 but not valid (argmax was no-object)
    ]
    probs = torch.tensor([[0.90, 0.05, 0.05], [0.05, 0.85, 0.10], [0.01, 0.95, 0.04],
                          [0.30, 0.30, 0.30], [0.60, 0.20, 0.20], [0.99, 0.0, 0.01]])
    valid = torch.tensor([True, True, True, True, True, False])
    ids, info = panoptic_inference(probs, box_logits(h, w, boxes), object_mask_threshold=0.5,
                                   overlap_threshold=0.8, thing_ids={0}, valid=valid)
    expected = torch.tensor([[1, 1, 0, 2, 2, 2],
                             [1, 1, 0, 2, 2, 2],
                             [1, 1, 0, 2, 2, 2],
                             [1, 1, 0, 2, 2, 2]], dtype=torch.int32)
    # column 2 was won by q4 (column 1 went to q0), which was then dropped: those pixels stay void
    assert ids.dtype == torch.int32 and torch.equal(ids, expected)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in info] == [(1, 0, True), (2, 1, False)]
    assert info[0]["score"] == pytest.approx(0.90) and info[1]["score"] == pytest.approx(0.95)

    # a lower overlap threshold keeps q4, which then owns column 2
    ids, info = panoptic_inference(probs, box_logits(h, w, boxes), object_mask_threshold=0.5,
                                   overlap_threshold=0.4, thing_ids={0}, valid=valid)
    assert [(s["id"], s["category_id"]) for s in info] == [(1, 0), (2, 1), (3, 0)]
    assert bool((ids[:, 2] == 3).all())


def test_panoptic_inference_things_are_not_merged_and_nothing_kept_is_void():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    logits = box_logits(2, 4, [(0, 2, 0, 2), (0, 2, 2, 4)])
    ids, info = panoptic_inference(probs, logits, object_mask_threshold=0.5, overlap_threshold=0.8, thing_ids=[0])
    assert torch.equal(ids, torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2]], dtype=torch.int32))
    assert len(info) == 2 and all(s["isthing"] for s in info)
    ids, info = panoptic_inference(probs, logits, object_mask_threshold=0.95, overlap_threshold=0.8, thing_ids=[0])
    assert info == [] and int(ids.abs().sum()) == 0


def test_instance_inference_known_answer():
    h, w = 3, 4
    logits = torch.full((3, h, w), -5.0)
    logits[0, 0, :2] = math.log(3.0)  # 2 px at sigmoid 0.75
    logits[1, 1:, :] = math.log(4.0)  # 8 px at sigmoid 0.8
    # query 2 has an empty mask (all logits <= 0): score 0
    probs = torch.tensor([[0.9, 0.05], [0.3, 0.6], [0.5, 0.4]])
    inst = instance_inference(probs, logits, topk=4)
    # top-4 pairs by probability: (q0,c0) .9, (q1,c1) .6, (q2,c0) .5, (q2,c1) .4
    assert inst.image_size == (h, w) and len(inst) == 4
    assert inst.pred_classes.tolist() == [0, 1, 0, 1] and inst.pred_classes.dtype == torch.int64
    assert inst.pred_masks.dtype == torch.bool
    assert torch.equal(inst.pred_masks[0], logits[0] > 0) and torch.equal(inst.pred_masks[1], logits[1] > 0)
    assert not bool(inst.pred_masks[2].any())
    assert torch.allclose(inst.scores, torch.tensor([0.9 * 0.75, 0.6 * 0.8, 0.0, 0.0]), atol=1e-5)

    # keep only thing class 1 among the top 4
    things = instance_inference(probs, logits, topk=4, thing_ids={1})
    assert things.pred_classes.tolist() == [1, 1]
    assert torch.allclose(things.scores, torch.tensor([0.6 * 0.8, 0.0]), atol=1e-5)
    # topk beyond Q*K is clipped
    assert len(instance_inference(probs, logits, topk=100)) == 6


def test_mask_scores_empty_mask_is_zero():
    logits = torch.tensor([[[-1.0, -2.0]], [[math.log(3.0), -1.0]]])
    assert torch.allclose(mask_scores(logits), torch.tensor([0.0, 0.75]), atol=1e-5)


def test_sem_seg_postprocess_crops_padding_then_resizes():
    result = torch.full((2, 8, 8), 100.0)  # padding is 100
    result[0, :6, :4] = 1.0
    result[1, :6, :4] = torch.arange(24.0).reshape(6, 4)
    same = sem_seg_postprocess(result, (6, 4), 6, 4)
    assert torch.equal(same, result[:, :6, :4])
    up = sem_seg_postprocess(result, (6, 4), 12, 8)
    assert up.shape == (2, 12, 8)
    assert torch.allclose(up[0], torch.ones(12, 8))  # no padding value leaks in
    assert float(up[1].min()) == 0.0 and float(up[1].max()) == 23.0
    # output pixel (1, 1) samples source (0.25, 0.25): 0.75 * (0.75 * 0 + 0.25 * 1) + 0.25 * (0.75 * 4 + 0.25 * 5)
    assert float(up[1, 1, 1]) == pytest.approx(1.25)
