"""Every model YAML under config/models/ loads; the non-MasQ-Tuning ones build a model."""
from __future__ import annotations

import pytest
import torch

from masqclip.config import setup_cfg
from masqclip.modeling import META_ARCH_REGISTRY, build_model

CONFIGS = "config/models"


def _yamls(repo_dir):
    files = sorted((repo_dir / CONFIGS).rglob("*.yaml"))
    assert len(files) >= 17, f"expected the paper + synthetic model configs, found {len(files)}"
    return files


def test_every_model_yaml_loads(repo_dir):
    for path in _yamls(repo_dir):
        cfg = setup_cfg(str(path))
        assert cfg.MODEL.META_ARCHITECTURE in {"MaskFormer", "MaskDistill", "MasQTuning"}, path


def test_paper_values(repo_dir):
    teacher = setup_cfg(str(repo_dir / CONFIGS / "base-novel/teacher_R50_100k_base48.yaml"))
    mf, head = teacher.MODEL.MASK_FORMER, teacher.MODEL.SEM_SEG_HEAD
    assert (mf.DEC_LAYERS, mf.NUM_OBJECT_QUERIES, mf.HIDDEN_DIM, mf.TRAIN_NUM_POINTS) == (10, 100, 256, 12544)
    assert (mf.CLASS_WEIGHT, mf.MASK_WEIGHT, mf.DICE_WEIGHT, mf.NO_OBJECT_WEIGHT) == (2.0, 5.0, 5.0, 0.1)
    assert (head.NUM_CLASSES, head.TRANSFORMER_ENC_LAYERS, head.CONVS_DIM) == (1, 6, 256)
    assert (teacher.SOLVER.MAX_ITER, teacher.SOLVER.IMS_PER_BATCH, teacher.INPUT.IMAGE_SIZE) == (100000, 16, 1024)
    assert teacher.DATASETS.TRAIN == ("coco_instance_train_base48",)
    novel = setup_cfg(str(repo_dir / CONFIGS / "base-novel/masqclip_R50_bs4_10k_novel17.yaml"))
    assert novel.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD == 0.5
    ade = setup_cfg(str(repo_dir / CONFIGS / "cross-dataset/test/ade20k-150-panoptic.yaml"))
    assert ade.MODEL.MASK_FORMER.TEST.PANOPTIC_ON and ade.INPUT.MIN_SIZE_TEST == 640
    assert ade.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD == 0.3
    pc = setup_cfg(str(repo_dir / CONFIGS / "cross-dataset/test/pascal-ctx-459.yaml"))
    assert (pc.INPUT.MIN_SIZE_TEST, pc.INPUT.MAX_SIZE_TEST) == (512, 2048)
    student = setup_cfg(str(repo_dir / CONFIGS / "cross-dataset/student_R50_30k.yaml"))
    assert (student.SOLVER.BASE_LR, student.SOLVER.MAX_ITER, student.SOLVER.IMS_PER_BATCH) == (1e-5, 30000, 4)


@pytest.mark.slow
def test_non_masq_tuning_configs_build(repo_dir):
    built = 0
    for path in _yamls(repo_dir):
        cfg = setup_cfg(str(path), ["MODEL.DEVICE", "cpu"])
        if cfg.MODEL.META_ARCHITECTURE == "MasQTuning":
            continue
        if cfg.MODEL.META_ARCHITECTURE not in META_ARCH_REGISTRY:
            pytest.fail(f"{path}: meta-architecture {cfg.MODEL.META_ARCHITECTURE} is not registered")
        torch.manual_seed(0)
        model = build_model(cfg)
        assert sum(p.numel() for p in model.parameters()) > 0
        built += 1
    assert built >= 8
