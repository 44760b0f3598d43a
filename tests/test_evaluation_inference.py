"""inference_on_dataset (eval mode, no grad, evaluator protocol) and build_evaluator's choices."""
from __future__ import annotations

import pytest
import torch

from masqclip.config import get_cfg
from masqclip.data.catalog import DatasetCatalog, MetadataCatalog
from masqclip.evaluation import (DatasetEvaluator, DatasetEvaluators, InstanceSegEvaluator, PanopticEvaluator,
                                 ProposalRecallEvaluator, SemSegEvaluator, build_evaluator, inference_on_dataset)


class _Recorder(DatasetEvaluator):
    def __init__(self, task):
        self.task, self.calls = task, []

    def reset(self):
        self.calls = []

    def process(self, inputs, outputs):
        self.calls.append((inputs, outputs))

    def evaluate(self):
        return {self.task: {"n": float(len(self.calls))}}


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, batch):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return [{"y": self.w * x["x"]} for x in batch]


def test_inference_runs_in_eval_mode_without_grad_and_restores_mode():
    model = _Model().train()
    loader = [[{"x": torch.tensor(float(i))}] for i in range(5)]
    ev = DatasetEvaluators([_Recorder("a"), _Recorder("b")])
    results = inference_on_dataset(model, loader, ev, log_period=2)
    assert results == {"a": {"n": 5.0}, "b": {"n": 5.0}}
    assert model.seen == [(False, False)] * 5
    assert model.training and torch.is_grad_enabled()
    assert not ev.evaluators[0].calls[0][1][0]["y"].requires_grad
    assert inference_on_dataset(model, loader, None) == {}


def test_evaluators_with_the_same_task_are_an_error():
    with pytest.raises(KeyError, match="task"):
        DatasetEvaluators([_Recorder("a"), _Recorder("a")]).evaluate()


@pytest.fixture
def registered():
    names = {"t_coco": "coco", "t_pan": "coco_panoptic_seg", "t_sem": "sem_seg", "t_odd": "lvis"}
    for name, kind in names.items():
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(evaluator_type=kind, stuff_classes=["a", "b"], thing_classes=["a"],
                                      sem_seg_root="x", panoptic_json="p.json", panoptic_root="p")
    yield names
    for name in names:
        DatasetCatalog.remove(name)


def _kinds(ev):
    return sorted(type(e).__name__ for e in (ev.evaluators if isinstance(ev, DatasetEvaluators) else [ev]))


def test_build_evaluator_by_type(registered):
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 65
    assert _kinds(build_evaluator(cfg, "t_coco", "")) == sorted(
        [InstanceSegEvaluator.__name__, ProposalRecallEvaluator.__name__])
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1  # class-agnostic teacher: recall only
    assert _kinds(build_evaluator(cfg, "t_coco", "")) == [ProposalRecallEvaluator.__name__]
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    assert _kinds(build_evaluator(cfg, "t_pan", "")) == sorted([PanopticEvaluator.__name__, SemSegEvaluator.__name__])
    sem = build_evaluator(cfg, "t_sem", "")
    assert isinstance(sem, SemSegEvaluator) and sem.num_classes == 2
    with pytest.raises(KeyError, match="lvis"):
        build_evaluator(cfg, "t_odd", "")
