"""The synthetic world: determinism, real-format validity, base/novel rules, coverage, catalog records."""
from __future__ import annotations

import colorsys
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import masqclip.data.datasets  # noqa: F401  (registers the dataset names)
from masqclip.cli import main as cli_main
from masqclip.data import DatasetCatalog, MetadataCatalog
from masqclip.data.datasets import DatasetNotFoundError
from masqclip.data.synthetic import ALL_CATEGORIES, STUFF_B, THINGS, WorldConfig, generate_world, things
from masqclip.data.synthetic import draw
from masqclip.data.synthetic.categories import BY_ID
from masqclip.data.synthetic.scene import SceneParams

SMALL = ["--num-train", "30", "--num-val", "12", "--image-size", "96", "--crops-train", "3", "--crops-val", "2",
         "--seed", "7"]
NOVEL_IDS = {c.id for c in things("novel")}


@pytest.fixture(scope="session")
def world_root(tmp_path_factory) -> Path:
    """A small world generated through the CLI plugin (``masqclip prepare synthetic``)."""
    root = tmp_path_factory.mktemp("datasets")
    assert cli_main(["prepare", "synthetic", "--output", str(root), *SMALL]) == 0
    return root


@pytest.fixture()
def datasets_env(world_root, monkeypatch) -> Path:
    monkeypatch.setenv("DETECTRON2_DATASETS", str(world_root))
    return world_root


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(world_root, tmp_path):
    # the fixture ran with the default (one worker per usable CPU)
    cli_main(["prepare", "synthetic", "--output", str(tmp_path / "again"), *SMALL, "--workers", "1"])
    first, second = _tree(world_root / "synthetic"), _tree(tmp_path / "again" / "synthetic")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_png_compression_level_changes_bytes_not_pixels(tmp_path, monkeypatch):
    """The stored (level-0) PNGs hold the same pixels as zlib level 1; every other file is the same."""
    import masqclip.data.synthetic.world as world

    cfg = WorldConfig(num_train=3, num_val=2, seed=5, crops_train=1, crops_val=1, scene=SceneParams(image_size=96))
    fast = _tree(generate_world(tmp_path / "fast", cfg))
    monkeypatch.setattr(world, "PNG_COMPRESSION", 1)
    small = _tree(generate_world(tmp_path / "small", cfg))
    assert fast.keys() == small.keys()
    pngs = [k for k in fast if k.endswith(".png")]
    assert len(pngs) > 20 and sum(map(len, (fast[k] for k in pngs))) > sum(map(len, (small[k] for k in pngs)))
    for key in pngs:
        a, b = (Image.open(io.BytesIO(t[key])) for t in (fast, small))
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b)), key
    assert all(fast[k] == small[k] for k in fast if not k.endswith(".png"))


def test_other_seed_other_images(world_root, tmp_path):
    cfg = WorldConfig(num_train=2, num_val=1, seed=8, crops_train=1, crops_val=1, scene=SceneParams(image_size=96))
    out = generate_world(tmp_path, cfg)
    name = "images/train/000001.png"
    assert (out / name).read_bytes() != (world_root / "synthetic" / name).read_bytes()


def test_instance_jsons_load_with_pycocotools_and_masks_match_areas(world_root):
    ann_dir = world_root / "synthetic" / "annotations"
    expected = {"train_base": things("base"), "val_base": things("base"), "val_novel": things("novel"),
                "val_all": THINGS}
    for stem, cats in expected.items():
        coco = COCO(str(ann_dir / f"instances_{stem}.json"))
        assert sorted(coco.getCatIds()) == [c.id for c in cats]
        assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {c.name for c in cats}
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.imgs[ann["image_id"]]
            m = coco.annToMask(ann)
            assert m.shape == (img["height"], img["width"])
            assert m.sum() == ann["area"] >= SceneParams().min_area
            x, y, w, h = ann["bbox"]
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)


def test_panoptic_pngs_match_segments_info_and_semantic_pngs(world_root):
    syn = world_root / "synthetic"
    for split, stuff in (("train", {13, 14, 15, 16, 17}), ("cross_val", {c.id for c in STUFF_B})):
        data = json.loads((syn / f"annotations/panoptic_{split}.json").read_text())
        cats = {c["id"]: c for c in data["categories"]}
        contiguous = {cid: i for i, cid in enumerate(sorted(cats))}
        assert set(cats) == {c.id for c in THINGS} | stuff
        assert all(cats[c.id]["isthing"] == 1 for c in THINGS) and all(cats[s]["isthing"] == 0 for s in stuff)
        for ann in data["annotations"]:
            ids = rgb2id(_read(syn / f"panoptic_{split}" / ann["file_name"]))
            sem = _read(syn / f"semantic_{split}" / ann["file_name"])
            assert sem.dtype == np.uint8 and sem.shape == ids.shape
            assert set(np.unique(sem).tolist()) <= set(contiguous.values()) | {255}
            segs = {s["id"]: s for s in ann["segments_info"]}
            assert set(np.unique(ids).tolist()) - {0} == set(segs)
            for seg_id, s in segs.items():
                m = ids == seg_id
                assert m.sum() == s["area"] and s["iscrowd"] == 0
                assert (sem[m] == contiguous[s["category_id"]]).all()


def test_novel_things_appear_in_training_images_but_are_not_annotated(world_root):
    syn = world_root / "synthetic"
    pan = json.loads((syn / "annotations/panoptic_train.json").read_text())
    inst = json.loads((syn / "annotations/instances_train_base.json").read_text())
    assert not {a["category_id"] for a in inst["annotations"]} & NOVEL_IDS
    annotated = {}
    for a in inst["annotations"]:
        annotated.setdefault(a["image_id"], []).append(mask_utils.decode(a["segmentation"]).astype(bool))
    novel_pixels = 0
    for ann in pan["annotations"]:
        novel = [s for s in ann["segments_info"] if s["category_id"] in NOVEL_IDS]
        if not novel:
            continue
        ids = rgb2id(_read(syn / "panoptic_train" / ann["file_name"]))
        covered = np.any(annotated.get(ann["image_id"], [np.zeros(ids.shape, bool)]), axis=0)
        for s in novel:  # drawn in the image, and no instance annotation covers it
            novel_pixels += int((ids == s["id"]).sum())
            assert not covered[ids == s["id"]].any()
    assert novel_pixels > 0


def test_every_category_is_present_in_the_test_sets(world_root):
    syn = world_root / "synthetic"
    for stem, cats in (("val_all", THINGS), ("val_novel", things("novel")), ("val_base", things("base"))):
        data = json.loads((syn / f"annotations/instances_{stem}.json").read_text())
        assert {a["category_id"] for a in data["annotations"]} == {c.id for c in cats}
    pan = json.loads((syn / "annotations/panoptic_cross_val.json").read_text())
    present = {s["category_id"] for a in pan["annotations"] for s in a["segments_info"]}
    assert present == {c.id for c in THINGS + STUFF_B}


def test_appearance_carries_identity(world_root):
    """The saturated pixels of every annotated thing have its category's hue (within the jitter)."""
    syn = world_root / "synthetic"
    coco = COCO(str(syn / "annotations/instances_val_all.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        rgb = _read(syn / "images/val" / coco.imgs[ann["image_id"]]["file_name"])[coco.annToMask(ann) > 0] / 255.0
        hsv = np.array([colorsys.rgb_to_hsv(*px) for px in rgb])
        bright = hsv[(hsv[:, 1] > 0.5) & (hsv[:, 2] > 0.5)]
        assert len(bright) > 0.3 * len(hsv), ann
        hue = math.degrees(np.angle(np.exp(2j * np.pi * bright[:, 0]).mean())) % 360
        diff = abs((hue - BY_ID[ann["category_id"]].hue + 180) % 360 - 180)
        assert diff < 2 * SceneParams().hue_jitter, (ann["category_id"], hue)


def test_clip_crops_cover_every_category_with_captions(world_root):
    crops = world_root / "synthetic" / "clip_crops"
    for split, per_cat in (("train", 3), ("val", 2)):
        lines = [json.loads(line) for line in (crops / f"{split}.jsonl").read_text().splitlines()]
        assert len(lines) == per_cat * len(ALL_CATEGORIES)
        assert {ln["category"] for ln in lines} == {c.name for c in ALL_CATEGORIES}
        for ln in lines:
            assert _read(crops / ln["file"]).shape == (WorldConfig().crop_size, WorldConfig().crop_size, 3)
            assert any(s in ln["caption"] for s in ln["category"].split(", "))


def test_world_json_describes_the_run(world_root):
    world = json.loads((world_root / "synthetic" / "world.json").read_text())
    assert world["config"]["num_train"] == 30 and world["config"]["scene"]["image_size"] == 96
    assert [c["name"] for c in world["categories"]] == [c.name for c in ALL_CATEGORIES]
    assert len({c["name"] for c in world["categories"]}) == len(ALL_CATEGORIES)
    assert world["splits"]["cross_val"]["world"] == "b"


def test_catalog_records_and_metadata(datasets_env):
    root = datasets_env / "synthetic"
    inst = DatasetCatalog.get("synthetic_instance_val_all")
    meta = MetadataCatalog.get("synthetic_instance_val_all")
    assert len(inst) == 12 and meta.evaluator_type == "coco" and meta.thing_classes == [c.name for c in THINGS]
    assert meta.novel_dataset_ids == sorted(NOVEL_IDS) and meta.ignore_label == 255
    for rec in inst:
        assert Path(rec["file_name"]).is_file()
        assert _read(Path(rec["file_name"])).shape[:2] == (rec["height"], rec["width"])
        for a in rec["annotations"]:
            assert 0 <= a["category_id"] < len(meta.thing_classes)
            assert meta.thing_dataset_id_to_contiguous_id[a["dataset_category_id"]] == a["category_id"]
            assert {"segmentation", "bbox", "iscrowd"} <= set(a)
    novel = DatasetCatalog.get("synthetic_instance_val_novel")
    assert MetadataCatalog.get("synthetic_instance_val_novel").thing_classes == [c.name for c in things("novel")]
    assert all(a["category_id"] < 4 for r in novel for a in r["annotations"])

    pan = DatasetCatalog.get("synthetic_cross_panoptic_val")
    pmeta = MetadataCatalog.get("synthetic_cross_panoptic_val")
    assert pmeta.evaluator_type == "ade20k_panoptic_seg" and len(pmeta.stuff_classes) == 17
    assert pmeta.stuff_classes[12:] == [c.name for c in STUFF_B]
    for rec in pan:
        assert Path(rec["pan_seg_file_name"]).is_file() and Path(rec["sem_seg_file_name"]).is_file()
        for s in rec["segments_info"]:
            assert s["isthing"] == (s["category_id"] < 12)
    sem = DatasetCatalog.get("synthetic_cross_sem_seg_val")
    assert len(sem) == 12 and MetadataCatalog.get("synthetic_cross_sem_seg_val").evaluator_type == "sem_seg"
    assert len(DatasetCatalog.get("synthetic_panoptic_train")) == 30
    assert len(DatasetCatalog.get("synthetic_instance_train_base")) == 30
    assert str(root) in sem[0]["sem_seg_file_name"]


def test_missing_world_names_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="masqclip prepare synthetic"):
        DatasetCatalog.get("synthetic_panoptic_train")


@pytest.mark.parametrize("shape", sorted(draw.SHAPES))
def test_shapes_are_centred_and_sized(shape):
    u, v = draw.object_frame(101, 101, 50.5, 50.5, 0.3)
    m = draw.shape_mask(shape, u, v, radius=30, aspect=1.0)
    ys, xs = np.nonzero(m)
    assert 0.15 * math.pi * 30 ** 2 < m.sum() <= math.pi * 30 ** 2 * 1.01
    assert xs.min() > 15 and xs.max() < 86 and ys.min() > 15 and ys.max() < 86


def test_circle_area_known_answer():
    u, v = draw.object_frame(200, 200, 100, 100, 0.0)
    assert abs(draw.shape_mask("circle", u, v, 50, 1.0).sum() / (math.pi * 2500) - 1) < 0.01
