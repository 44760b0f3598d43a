"""SetCriterion: hand-computed losses, dense equivalence, class weights, aux keys, num_masks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from masqclip.modeling.losses import HungarianMatcher, SetCriterion
from masqclip.modeling.losses import criterion as criterion_module


def make_criterion(num_classes: int = 1, num_points: int = 16, eos: float = 0.1) -> SetCriterion:
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
    return SetCriterion(num_classes=num_classes, matcher=matcher, weight_dict={"loss_ce": 2.0}, eos_coef=eos,
                        num_points=num_points, oversample_ratio=3.0, importance_sample_ratio=0.75)


class FixedMatcher(torch.nn.Module):
    def __init__(self, indices):
        super().__init__()
        self.indices = indices

    def forward(self, outputs, targets):
        return self.indices


def pixel_centres(h: int, w: int) -> torch.Tensor:
    """[h*w, 2] normalised (x, y) centres of an h x w grid, row-major."""
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2)


@pytest.fixture
def dense_points(monkeypatch):
    """Make the criterion sample every pixel centre of the prediction grid instead of random points."""
    def all_centres(logits, func, num_points, ratio, beta, **kw):
        h, w = logits.shape[-2:]
        assert num_points == h * w
        return pixel_centres(h, w)[None].expand(logits.shape[0], -1, -1)

    monkeypatch.setattr(criterion_module, "get_uncertain_point_coords_with_randomness", all_centres)


def test_empty_weight_is_a_persistent_buffer_sized_by_num_classes():
    crit = make_criterion(num_classes=133)
    state = crit.state_dict()
    assert list(state) == ["empty_weight"]
    assert state["empty_weight"].shape == (134,)
    assert float(state["empty_weight"][-1]) == pytest.approx(0.1) and bool((state["empty_weight"][:-1] == 1).all())


def test_class_loss_hand_computed():
    # two queries, query 0 matched to a class-0 target, query 1 -> no-object (weight 0.1)
    logits = torch.tensor([[[2.0, 0.5], [0.3, 1.0]]])
    crit = make_criterion()
    crit.matcher = FixedMatcher([(torch.tensor([0]), torch.tensor([0]))])
    outputs = {"pred_logits": logits, "pred_masks": torch.zeros(1, 2, 4, 4)}
    targets = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 4, 4, dtype=torch.bool)}]
    loss = crit(outputs, targets)["loss_ce"]
    l0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5)))
    l1 = -math.log(math.exp(1.0) / (math.exp(0.3) + math.exp(1.0)))
    assert float(loss) == pytest.approx((1.0 * l0 + 0.1 * l1) / 1.1, rel=1e-6)


def test_vocabulary_sized_empty_weight_with_two_logit_columns():
    """MasQ-Tuning layout: 134-entry buffer, 2 logit columns -> CE weights [1, eos]."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, generator=g)
    crit = make_criterion(num_classes=133)
    indices = [(torch.tensor([1]), torch.tensor([0])), (torch.tensor([0, 2]), torch.tensor([1, 0]))]
    crit.matcher = FixedMatcher(indices)
    targets = [{"labels": torch.zeros(1, dtype=torch.int64), "masks": torch.ones(1, 4, 4)},
               {"labels": torch.zeros(2, dtype=torch.int64), "masks": torch.ones(2, 4, 4)}]
    loss = crit({"pred_logits": logits, "pred_masks": torch.zeros(2, 3, 4, 4)}, targets)["loss_ce"]
    target_classes = torch.tensor([[1, 0, 1], [0, 1, 0]])
    expected = F.cross_entropy(logits.transpose(1, 2), target_classes, torch.tensor([1.0, 0.1]))
    assert torch.allclose(loss, expected)
    bad = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 4, 4)}] * 2
    with pytest.raises(ValueError, match="does not fit"):
        crit({"pred_logits": logits, "pred_masks": torch.zeros(2, 3, 4, 4)}, bad)


def test_mask_losses_hand_computed(dense_points):
    # one 1x2 prediction: logits (ln 3, 0) -> probs (0.75, 0.5); target (1, 0)
    crit = make_criterion(num_points=2)
    crit.matcher = FixedMatcher([(torch.tensor([0]), torch.tensor([0]))])
    outputs = {"pred_logits": torch.zeros(1, 1, 2), "pred_masks": torch.tensor([[[[math.log(3.0), 0.0]]]])}
    targets = [{"labels": torch.tensor([0]), "masks": torch.tensor([[[True, False]]])}]
    losses = crit(outputs, targets)
    bce = (-math.log(0.75) - math.log(0.5)) / 2
    dice = 1 - (2 * 0.75 + 1) / (0.75 + 0.5 + 1 + 1)
    assert float(losses["loss_mask"]) == pytest.approx(bce, rel=1e-5)
    assert float(losses["loss_dice"]) == pytest.approx(dice, rel=1e-5)


def test_mask_losses_equal_dense_computation(dense_points):
    """Sampling every pixel centre = the dense loss; targets at 2x resolution (2x2 blocks) align."""
    g = torch.Generator().manual_seed(3)
    h = w = 6
    pred = torch.randn(2, 3, h, w, generator=g)
    low_res = [torch.rand(2, h, w, generator=g) > 0.5, torch.rand(1, h, w, generator=g) > 0.5]
    targets = [{"labels": torch.zeros(len(m), dtype=torch.int64),
                "masks": m.repeat_interleave(2, 1).repeat_interleave(2, 2)} for m in low_res]
    indices = [(torch.tensor([2, 0]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))]
    crit = make_criterion(num_points=h * w)
    crit.matcher = FixedMatcher(indices)
    losses = crit({"pred_logits": torch.zeros(2, 3, 2), "pred_masks": pred}, targets)
    bce = dice = 0.0
    for b, (src, tgt) in enumerate(indices):
        for s, t in zip(src.tolist(), tgt.tolist()):
            x, y = pred[b, s].flatten(), low_res[b][t].flatten().float()
            bce += float(F.binary_cross_entropy_with_logits(x, y))
            p = x.sigmoid()
            dice += float(1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1))
    assert float(losses["loss_mask"]) == pytest.approx(bce / 3, rel=1e-5)
    assert float(losses["loss_dice"]) == pytest.approx(dice / 3, rel=1e-5)


def test_aux_outputs_get_suffixed_losses_and_gradients_flow():
    g = torch.Generator().manual_seed(1)
    def level():
        return {"pred_logits": torch.randn(2, 4, 2, generator=g).requires_grad_(),
                "pred_masks": torch.randn(2, 4, 8, 8, generator=g).requires_grad_()}
    outputs = level()
    outputs["aux_outputs"] = [level(), level()]
    targets = [{"labels": torch.zeros(2, dtype=torch.int64), "masks": torch.rand(2, 32, 32, generator=g) > 0.5},
               {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}]
    losses = make_criterion(num_points=32)(outputs, targets)
    base = {"loss_ce", "loss_mask", "loss_dice"}
    assert set(losses) == base | {f"{k}_{i}" for k in base for i in (0, 1)}
    sum(losses.values()).backward()
    for out in [outputs] + outputs["aux_outputs"]:
        assert out["pred_masks"].grad is not None and float(out["pred_masks"].grad.abs().sum()) > 0


def test_no_targets_anywhere_gives_zero_mask_losses():
    outputs = {"pred_logits": torch.randn(2, 3, 2, requires_grad=True),
               "pred_masks": torch.randn(2, 3, 4, 4, requires_grad=True)}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}
    losses = make_criterion()(outputs, [empty, empty])
    assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_dice"].detach()) == 0.0
    # all queries are no-object: CE is the mean no-object NLL
    expected = -outputs["pred_logits"].log_softmax(-1)[..., 1].mean()
    assert torch.allclose(losses["loss_ce"], expected)
    sum(losses.values()).backward()


def test_num_masks_normalises_by_total_targets():
    crit = make_criterion()
    targets = [{"labels": torch.zeros(n, dtype=torch.int64)} for n in (1, 2, 0)]
    assert float(crit.num_masks(targets, torch.device("cpu"))) == 3.0
    assert float(crit.num_masks([{"labels": torch.zeros(0)}], torch.device("cpu"))) == 1.0


def _distributed_num_masks(rank: int, world: int, init_file: str, counts: list[int], out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        crit = make_criterion()
        value = crit.num_masks([{"labels": torch.zeros(counts[rank], dtype=torch.int64)}], torch.device("cpu"))
        torch.save(float(value), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_num_masks_is_averaged_across_processes(tmp_path):
    out = str(tmp_path / "value")
    mp.spawn(_distributed_num_masks, args=(2, str(tmp_path / "init"), [1, 4], out), nprocs=2, join=True)
    assert [torch.load(f"{out}.{r}") for r in range(2)] == [2.5, 2.5]
