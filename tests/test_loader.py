"""Mapper and loaders: model-input format, target/image alignment, deterministic (seed, iteration) batches."""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from masqclip.config import get_cfg
from masqclip.data import DatasetCatalog, MetadataCatalog
from masqclip.data.build import IterationSamples, build_test_loader, build_train_loader, train_records
from masqclip.data.mapper import DatasetMapper, decode_segmentation, record_targets
from masqclip.data.synthetic import SceneParams, WorldConfig, generate_world
from masqclip.data.transforms import LSJ, GeometricTransform
from masqclip.structures import Instances


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader_datasets")
    generate_world(root, WorldConfig(num_train=12, num_val=4, seed=1, crops_train=1, crops_val=1,
                                     scene=SceneParams(image_size=64)))
    return root


@pytest.fixture()
def cfg(world, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    c = get_cfg()
    c.DATASETS.TRAIN = ("synthetic_panoptic_train",)
    c.SOLVER.IMS_PER_BATCH = 4
    c.SEED = 11
    c.INPUT.IMAGE_SIZE, c.INPUT.MIN_SCALE, c.INPUT.MAX_SCALE = 64, 0.5, 1.5
    c.INPUT.MIN_SIZE_TEST, c.INPUT.MAX_SIZE_TEST = 96, 200
    c.DATALOADER.NUM_WORKERS = 0
    return c


def _same(a: list[dict], b: list[dict]) -> bool:
    """Two per-rank batches are identical (ids, images, masks, classes, semantics)."""
    if len(a) != len(b):
        return False
    return all(x["image_id"] == y["image_id"] and torch.equal(x["image"], y["image"])
               and torch.equal(x["instances"].gt_masks, y["instances"].gt_masks)
               and torch.equal(x["instances"].gt_classes, y["instances"].gt_classes)
               and torch.equal(x["sem_seg"], y["sem_seg"]) for x, y in zip(a, b))


def _take(cfg, n: int, **kwargs) -> list[list[dict]]:
    return list(islice(build_train_loader(cfg, **kwargs), n))


def test_train_samples_have_the_model_input_format(cfg):
    batch = next(build_train_loader(cfg))
    assert isinstance(batch, list) and len(batch) == 4
    n_classes = len(MetadataCatalog.get("synthetic_panoptic_train").stuff_classes)
    for x in batch:
        assert x["image"].dtype == torch.uint8 and x["image"].shape == (3, 64, 64)
        inst = x["instances"]
        assert isinstance(inst, Instances) and inst.image_size == (64, 64)
        assert inst.gt_classes.dtype == torch.int64 and inst.gt_masks.dtype == torch.bool
        assert inst.gt_masks.shape[1:] == (64, 64) and len(inst) > 0
        assert inst.gt_masks.flatten(1).any(1).all()  # no empty instance survives
        assert ((inst.gt_classes >= 0) & (inst.gt_classes < n_classes)).all()
        # panoptic segments are disjoint and agree with the semantic labels
        assert inst.gt_masks.sum(0).max() <= 1
        for m, c in zip(inst.gt_masks, inst.gt_classes):
            assert (x["sem_seg"][m] == c).all()
        assert x["sem_seg"].dtype == torch.int64 and x["sem_seg"].shape == (64, 64)
        assert {"height", "width", "file_name", "image_id"} <= set(x)


def test_instance_mapper_matches_the_rle_masks_under_the_same_transform(cfg):
    record = DatasetCatalog.get("synthetic_instance_val_all")[0]
    mapper = DatasetMapper.from_config(cfg, is_train=True)
    lsj = LSJ.from_config(cfg)
    out = mapper(record, np.random.default_rng(4))
    tf = lsj(np.random.default_rng(4), (record["height"], record["width"]))
    masks = np.stack([mask_utils.decode(a["segmentation"]).astype(bool) for a in record["annotations"]])
    expected = tf.apply_labels(masks, 0)
    keep = expected.reshape(len(expected), -1).any(1)
    assert torch.equal(out["instances"].gt_masks, torch.from_numpy(expected[keep]))
    classes = np.array([a["category_id"] for a in record["annotations"]])[keep]
    assert out["instances"].gt_classes.tolist() == classes.tolist()
    assert "sem_seg" not in out


def test_instances_emptied_by_the_crop_are_removed(tmp_path):
    h, w = 40, 40
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "im.png")
    corner, centre = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    corner[34:, 34:] = 1
    centre[5:15, 5:15] = 1
    anns = [{"segmentation": _rle(m), "category_id": c, "iscrowd": 0} for m, c in ((corner, 3), (centre, 5))]
    record = {"file_name": str(tmp_path / "im.png"), "image_id": 1, "height": h, "width": w, "annotations": anns}
    top_left = GeometricTransform(in_size=(h, w), scaled_size=(h, w), offset=(0, 0), out_size=(20, 20))
    mapper = DatasetMapper(is_train=True, train_augment=lambda rng, size: top_left)
    inst = mapper(record, np.random.default_rng(0))["instances"]
    assert inst.gt_classes.tolist() == [5] and inst.gt_masks.shape == (1, 20, 20)
    assert int(inst.gt_masks.sum()) == 100


def test_an_image_without_annotations_maps_to_zero_instances(tmp_path):
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(tmp_path / "im.png")
    record = {"file_name": str(tmp_path / "im.png"), "image_id": 2, "height": 30, "width": 50, "annotations": []}
    mapper = DatasetMapper(is_train=True, train_augment=LSJ(image_size=32, min_scale=0.5, max_scale=1.5))
    inst = mapper(record, np.random.default_rng(0))["instances"]
    assert len(inst) == 0 and inst.gt_masks.shape == (0, 32, 32) and inst.gt_classes.dtype == torch.int64


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def test_semantic_only_records_give_one_instance_per_class(world, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(world))
    record = DatasetCatalog.get("synthetic_cross_sem_seg_val")[0]
    masks, classes, sem = record_targets(record, ignore_label=255)
    assert classes.tolist() == sorted(set(np.unique(sem).tolist()) - {255})
    assert (masks.sum(0) == (sem != 255)).all()


def test_same_seed_and_iteration_same_batch_whatever_start_iter(cfg):
    full = _take(cfg, 5)
    resumed = _take(cfg, 2, start_iter=3)
    assert _same(full[3], resumed[0]) and _same(full[4], resumed[1])
    assert not _same(full[0], full[1])
    cfg.SEED = 12
    assert not _same(full[0], _take(cfg, 1)[0])


def test_rank_split_recomposes_the_global_batch(cfg):
    cfg.SOLVER.IMS_PER_BATCH = 5
    whole = _take(cfg, 3)
    parts = [_take(cfg, 3, rank=r, world_size=2) for r in range(2)]
    assert [len(p[0]) for p in parts] == [3, 2]
    for i in range(3):
        merged = [None] * 5
        merged[0::2], merged[1::2] = parts[0][i], parts[1][i]
        assert _same(whole[i], merged)


@pytest.mark.parametrize("start_iter", [0, 7])
def test_workers_do_not_change_the_data(cfg, start_iter):
    serial = _take(cfg, 4, start_iter=start_iter)
    cfg.DATALOADER.NUM_WORKERS = 2
    assert all(_same(a, b) for a, b in zip(serial, _take(cfg, 4, start_iter=start_iter)))


def test_each_epoch_visits_every_image_once(cfg):
    records = train_records(cfg)
    samples = IterationSamples(records=records, mapper=None, seed=3, batch_size=4)
    n = len(records)
    for epoch in range(3):
        seen = [samples.record_index(g // 4, g % 4) for g in range(epoch * n, (epoch + 1) * n)]
        assert sorted(seen) == list(range(n))
    first = [samples.record_index(g // 4, g % 4) for g in range(n)]
    second = [samples.record_index(g // 4, g % 4) for g in range(n, 2 * n)]
    assert first != second  # reshuffled per epoch


def test_images_without_annotations_are_filtered(cfg):
    cfg.DATASETS.TRAIN = ("synthetic_instance_train_base",)
    records = DatasetCatalog.get("synthetic_instance_train_base")
    kept = train_records(cfg)
    assert len(kept) == sum(bool(r["annotations"]) for r in records)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert len(train_records(cfg)) == len(records)


def test_negative_seed_is_refused_with_several_ranks(cfg):
    cfg.SEED = -1
    with pytest.raises(ValueError, match="SEED"):
        build_train_loader(cfg, rank=0, world_size=2)


def test_test_loader_resizes_and_keeps_original_size(cfg):
    loader = build_test_loader(cfg, "synthetic_cross_panoptic_val")
    records = DatasetCatalog.get("synthetic_cross_panoptic_val")
    batches = list(loader)
    assert len(batches) == len(loader) == len(records)
    for batch, rec in zip(batches, records):
        assert isinstance(batch, list) and len(batch) == 1
        x = batch[0]
        assert (x["height"], x["width"]) == (rec["height"], rec["width"]) and x["image_id"] == rec["image_id"]
        assert min(x["image"].shape[1:]) == 96 and x["image"].dtype == torch.uint8
        assert x["pan_seg_file_name"] == rec["pan_seg_file_name"] and "instances" not in x


def test_decode_segmentation_accepts_polygons_and_both_rle_forms():
    poly = [[10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]]  # a 20 x 10 rectangle
    m = decode_segmentation(poly, 40, 50)
    assert m.shape == (40, 50) and m.dtype == bool and abs(int(m.sum()) - 200) <= 30
    assert m[15, 20] and not m[5, 5]
    uncompressed = {"size": [40, 50], "counts": [100, 40, 1860]}  # column-major runs: 0s, 1s, 0s
    expected = np.zeros((50, 40), bool).ravel()
    expected[100:140] = True
    assert (decode_segmentation(uncompressed, 40, 50) == expected.reshape(50, 40).T).all()
    assert (decode_segmentation(_rle(m.astype(np.uint8)), 40, 50) == m).all()
