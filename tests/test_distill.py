"""Progressive-distillation target selection (and the MaskDistill student, when it can be built)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from masqclip.config import setup_cfg
from masqclip.modeling import build_model
from masqclip.modeling.losses import dice_nms, select_distill_targets
from masqclip.modeling.meta_arch import MaskDistill
from masqclip.structures import Instances

REPO = Path(__file__).resolve().parents[1]
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


def test_valid_size_ignores_the_padding():
    inside = box(18, 30, 18, 30)
    straddling = box(20, 30, 0, 8)  # rows 24.. are padding when the image is 24 x 32
    padding_only = box(26, 32, 12, 16)
    kept = select(as_logits([inside, straddling, padding_only]), torch.tensor([0.95, 0.9, 0.99]), GT[None],
                  valid_size=(24, 32))
    assert kept.shape == (2, H, W)
    assert torch.equal(kept[0], box(18, 24, 18, 30)) and torch.equal(kept[1], box(20, 24, 0, 8))


def pixel(y: int, x: int) -> torch.Tensor:
    return box(y, y + 1, x, x + 1)


def test_tiny_mask_far_from_a_tiny_gt_is_dropped_by_the_smoothed_dice():
    # One teacher pixel, one gt pixel, far apart: no sample point sees both (a bilinear sample of a
    # one-pixel mask is non-zero only within one pixel of it), so the intersection is 0. With 4
    # points each mask sums to at most 4, so dice = (0 + 1) / (|A| + |B| + 1) >= 1/9 > beta = 0.1
    # for EVERY point sample: dropped. (The unsmoothed dice, 0, kept it.)
    teacher, gt = pixel(20, 20), pixel(2, 2)
    for seed in range(5):
        assert select(as_logits([teacher]), torch.tensor([0.99]), gt[None], seed=seed, num_points=4).shape[0] == 0
    # the same mask without any ground truth has nothing to be compared with: kept
    assert select(as_logits([teacher]), torch.tensor([0.99]), gt[None][:0], num_points=4).shape[0] == 1


def test_dice_nms_uses_the_smoothed_dice():
    # 19 points; four disjoint masks covering 1, 1, 7 and 10 of them, scores 0.9, 0.8, 0.7, 0.6.
    # Smoothed dice with the kept first one: b 1/3, c 1/9 (>= 0.1: suppressed), d 1/12 (kept).
    points = torch.zeros(4, 19)
    points[0, 0] = points[1, 1] = 1.0
    points[2, 2:9] = 1.0
    points[3, 9:19] = 1.0
    assert dice_nms(points, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.1).tolist() == [0, 3]
    assert dice_nms(points, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.1, smooth=0.0).tolist() == [0, 1, 2, 3]


def test_nms_of_two_tiny_teacher_masks_keeps_one():
    # no ground truth; two single-pixel masks far apart, 4 points: dice >= 1/9 -> the 0.9 one is suppressed
    masks = [pixel(5, 5), pixel(25, 25)]
    for seed in range(5):
        kept = select(as_logits(masks), torch.tensor([0.95, 0.9]), torch.zeros(0, H, W, dtype=torch.bool),
                      seed=seed, num_points=4)
        assert torch.equal(kept, masks[0][None])


def reference_selection(binary, scores, gt, *, alpha, beta, num_points, seed):
    """Independent re-statement of the selection on full-resolution binary masks: the score test,
    the smoothed dice against every gt mask on one point sample, then greedy NMS on a second."""
    generator = torch.Generator().manual_seed(seed)
    samples = [torch.rand(1, num_points, 2, generator=generator) for _ in range(2)]

    def values(masks, coords):  # bilinear samples, (x, y) in [0, 1] over the whole mask
        grid = (2 * coords - 1)[:, :, None, :]
        return F.grid_sample(masks[None].float(), grid, mode="bilinear", align_corners=False)[0, :, :, 0]

    def dice(a, b):
        return float((2 * (a * b).sum() + 1) / (a.sum() + b.sum() + 1))

    order = [i for i in sorted(range(len(scores)), key=lambda i: -float(scores[i])) if scores[i] > alpha]
    pv, gv = values(binary, samples[0]), values(gt, samples[0]) if len(gt) else None
    order = [i for i in order if gv is None or all(dice(pv[i], g) < beta for g in gv)]
    pv, kept = values(binary, samples[1]), []
    for i in order:
        if all(dice(pv[i], pv[j]) < beta for j in kept):
            kept.append(i)
    return kept


def test_selection_matches_an_independent_implementation():
    generator = torch.Generator().manual_seed(3)
    for seed in range(12):
        boxes = []
        for _ in range(8):  # random small and large boxes, some overlapping each other and the gt
            y, x = (int(v) for v in torch.randint(0, 30, (2,), generator=generator))
            h, w = (int(v) for v in torch.randint(1, 12, (2,), generator=generator))
            boxes.append(box(y, min(y + h, H), x, min(x + w, W)))
        probs = 0.7 + 0.3 * torch.rand(8, generator=generator)
        gt = torch.stack([box(0, 12, 0, 12), pixel(20, 3)])
        logits = as_logits(boxes)
        scores = probs * torch.sigmoid(torch.tensor(LOGIT))  # mean mask probability of a box
        expected = reference_selection(torch.stack(boxes), scores, gt, alpha=0.8, beta=0.1, num_points=64, seed=seed)
        kept = select(logits, probs, gt, seed=seed, num_points=64)
        assert torch.equal(kept, torch.stack(boxes)[expected]) if expected else kept.shape[0] == 0, seed


# ---------------------------------------------------------------------------------------------
# The MaskDistill student
# ---------------------------------------------------------------------------------------------

SYNTHETIC = "config/models/synthetic/{}.yaml"  # the embedded default's student / teacher configs


def synthetic_cfg(stage: str, *opts):
    return setup_cfg(str(REPO / SYNTHETIC.format(stage)), ["MODEL.DEVICE", "cpu", *opts])


@pytest.fixture(scope="module")
def student() -> MaskDistill:
    torch.manual_seed(0)
    return build_model(synthetic_cfg("student"))


def test_teacher_is_outside_the_state_dict_but_moves_along(student):
    teacher_keys = set(build_model(synthetic_cfg("teacher")).state_dict())
    assert set(student.state_dict()) == teacher_keys == set(student.teacher.state_dict())
    student_params = {id(p) for p in student.parameters()}
    assert not any(id(p) in student_params for p in student.teacher.parameters())
    assert not any(p.requires_grad for p in student.teacher.parameters())
    student.train()
    assert not student.teacher.training
    student.to(torch.float64)
    try:
        assert next(student.teacher.parameters()).dtype == torch.float64
    finally:
        student.to(torch.float32)
    assert next(student.teacher.parameters()).dtype == torch.float32


def test_training_without_a_teacher_is_a_clear_error():
    model = build_model(synthetic_cfg("student")).train()
    gt = box(0, 12, 0, 12)[None]
    batch = [{"image": torch.zeros(3, H, W), "instances": Instances((H, W), gt_classes=torch.tensor([0]), gt_masks=gt)}]
    with pytest.raises(RuntimeError, match="load_teacher"):
        model(batch)
    with pytest.raises(ValueError, match="TEACHER_WEIGHTS"):
        model.load_teacher()


def fake_teacher_predictions(boxes_per_image, probs_per_image, padded=(64, 64)):
    """predict_queries-style outputs: logits at 1/4 of the padded size from full-resolution boxes."""
    out = []
    for (boxes, size), probs in zip(boxes_per_image, probs_per_image):
        masks = as_logits([box(*b, size=padded) for b in boxes])[:, 2::4, 2::4]  # [Q, 16, 16]
        p = torch.tensor(probs)
        logits = torch.stack([torch.log(p), torch.log1p(-p)], -1)  # softmax column 0 = p
        out.append({"pred_logits": logits, "pred_masks": masks, "image_size": size, "padded_size": padded})
    return out


def test_student_targets_contain_exactly_the_selected_teacher_masks(student, monkeypatch):
    # image 0: 64 x 64, one gt; image 1: 48 x 64 (padded to 64 x 64), one gt. Boxes on a 4-px grid.
    gt0, gt1 = box(0, 24, 0, 24, (64, 64)), box(0, 16, 40, 64, (48, 64))
    teacher = fake_teacher_predictions(
        [([(4, 24, 4, 24), (40, 60, 40, 60), (40, 60, 0, 20), (0, 64, 0, 64)], (64, 64)),
         ([(0, 16, 40, 64), (20, 40, 0, 20), (20, 40, 28, 44), (48, 64, 0, 64)], (48, 64))],
        [[0.99, 0.95, 0.50, 0.10],   # overlaps gt0 / novel, kept / low score / low score
         [0.99, 0.90, 0.93, 0.99]])  # is gt1 / novel, kept / novel, kept / padding only
    monkeypatch.setattr(student.teacher, "predict_queries", lambda inputs: teacher)
    seen = {}
    original = student.criterion.forward

    def spy(outputs, targets):
        seen["targets"] = targets
        return original(outputs, targets)

    monkeypatch.setattr(student.criterion, "forward", spy)
    batch = [{"image": torch.randint(0, 255, (3, 64, 64)).to(torch.uint8),
              "instances": Instances((64, 64), gt_classes=torch.tensor([7]), gt_masks=gt0[None])},
             {"image": torch.randint(0, 255, (3, 48, 64)).to(torch.uint8),
              "instances": Instances((48, 64), gt_classes=torch.tensor([3]), gt_masks=gt1[None])}]
    student.set_teacher(student.teacher).train()
    out = student(batch)

    def upsampled(image: int, query: int) -> torch.Tensor:
        """The teacher's binary mask at full padded resolution (bilinear, logit > 0): rounded corners."""
        logits = teacher[image]["pred_masks"][query][None, None]
        return F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)[0, 0] > 0

    t0, t1 = seen["targets"]
    assert t0["labels"].tolist() == [0, 0] and t1["labels"].tolist() == [0, 0, 0]
    assert torch.equal(t0["masks"], torch.stack([gt0, upsampled(0, 1)]))
    padded_gt1 = torch.cat([gt1, torch.zeros(16, 64, dtype=torch.bool)])
    assert torch.equal(t1["masks"], torch.stack([padded_gt1, upsampled(1, 2), upsampled(1, 1)]))  # by score
    assert upsampled(0, 1)[40:60, 40:60].sum() == 20 * 20 - 4  # the box minus its 4 corner pixels
    assert float(out["distill/num_extra"]) == pytest.approx(1.5)
    losses = {k: v for k, v in out.items() if k.startswith("loss_")}
    assert set(out) - set(losses) == {"distill/num_extra"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_inference_is_maskformer_inference(student):
    teacher_like = build_model(synthetic_cfg("teacher"))
    teacher_like.load_state_dict(student.state_dict())
    image = {"image": torch.randint(0, 255, (3, 40, 56)).to(torch.uint8), "height": 40, "width": 56}
    student.eval(), teacher_like.eval()
    with torch.no_grad():
        a, b = student([image])[0]["instances"], teacher_like([image])[0]["instances"]
    assert torch.equal(a.pred_masks, b.pred_masks) and torch.allclose(a.scores, b.scores)


def test_load_teacher_from_a_checkpoint(tmp_path):
    from masqclip.checkpoint import save_checkpoint

    source = build_model(synthetic_cfg("teacher"))
    path = tmp_path / "teacher.pth"
    save_checkpoint(str(path), source, iteration=7)
    model = build_model(synthetic_cfg("student", "MODEL.DISTILL.TEACHER_WEIGHTS", str(path))).load_teacher()
    for key, value in source.state_dict().items():
        assert torch.equal(model.teacher.state_dict()[key], value), key
    assert not model.teacher.training and model._teacher_loaded
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("backbone.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="lacks"):
        model.load_teacher(str(tmp_path / "partial.pth"))
