"""End to end on the generated synthetic world: an oracle "model" that returns the ground truth
scores 100 with every evaluator build_evaluator picks, through inference_on_dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from panopticapi.utils import rgb2id
from PIL import Image

from masqclip.config import get_cfg
from masqclip.data import DatasetCatalog, MetadataCatalog
from masqclip.evaluation import build_evaluator, inference_on_dataset
from masqclip.evaluation.masks import annotation_to_rle
from masqclip.structures import Instances


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world


class _Oracle(torch.nn.Module):
    """Returns each image's ground truth in the model-output format."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, batch):
        import pycocotools.mask as mask_util

        outs = []
        for rec in batch:
            out = {}
            if "annotations" in rec:
                masks = [mask_util.decode(annotation_to_rle(a["segmentation"], rec["height"], rec["width"]))
                         for a in rec["annotations"]]
                out["instances"] = Instances(
                    (rec["height"], rec["width"]),
                    pred_masks=torch.as_tensor(np.stack(masks)).bool(),
                    pred_classes=torch.tensor([a["category_id"] for a in rec["annotations"]]),
                    scores=torch.ones(len(masks)))
            if "pan_seg_file_name" in rec:
                with Image.open(rec["pan_seg_file_name"]) as im:
                    ids = rgb2id(np.asarray(im))
                out["panoptic_seg"] = (torch.as_tensor(ids), rec["segments_info"])
            if "sem_seg_file_name" in rec:
                with Image.open(rec["sem_seg_file_name"]) as im:
                    sem = torch.as_tensor(np.asarray(im).astype(np.int64))
                sem = torch.where(sem < self.num_classes, sem, 0)
                out["sem_seg"] = torch.nn.functional.one_hot(sem, self.num_classes).permute(2, 0, 1).float()
            outs.append(out)
        return outs


def _evaluate(name, tmp_path, **test_switches):
    cfg = get_cfg()
    meta = MetadataCatalog.get(name)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(meta.stuff_classes)
    for key, value in test_switches.items():
        setattr(cfg.MODEL.MASK_FORMER.TEST, key, value)
    evaluator = build_evaluator(cfg, name, str(tmp_path))
    loader = [[rec] for rec in DatasetCatalog.get(name)]
    return inference_on_dataset(_Oracle(len(meta.stuff_classes)), loader, evaluator)


def test_instance_and_recall_on_synthetic(world, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    res = _evaluate("synthetic_instance_val_all", tmp_path)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["segm"]["AP50_base"] == pytest.approx(100.0) and res["segm"]["AP50_novel"] == pytest.approx(100.0)
    assert res["proposals"]["AR@100_novel"] == pytest.approx(100.0) and res["proposals"]["num_gt_novel"] > 0
    assert (tmp_path / "instance_evaluation.json").is_file() and (tmp_path / "proposal_recall.json").is_file()


def test_panoptic_and_semantic_on_synthetic(world, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    res = _evaluate("synthetic_cross_panoptic_val", tmp_path, PANOPTIC_ON=True, SEMANTIC_ON=True, INSTANCE_ON=False)
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert res["panoptic_seg"]["PQ_st"] == pytest.approx(100.0)
    assert res["sem_seg"]["mIoU"] == pytest.approx(100.0)
