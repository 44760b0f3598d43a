"""Real-dataset registration, preparation (on miniature raw releases) and loading."""
from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from panopticapi.utils import rgb2id
from PIL import Image

from fixtures_raw import (ADE_NAMES, PASCAL_59, PASCAL_459, coco_masks, make_ade20k, make_ade20k_full, make_coco,
                          make_pascal_context)
from masqclip.cli import main as cli
from masqclip.data import DatasetCatalog, MetadataCatalog
from masqclip.data.datasets import DatasetNotFoundError
from masqclip.data.datasets.coco import ovsplit_categories
from masqclip.data.prepare.ade20k_847 import prepare_ade20k_847

OFFICIAL = ["coco_instance_train_base48", "coco_instance_train_novel17", "coco_instance_train_instances65",
            "coco_instance_val_base48", "coco_instance_val_novel17", "coco_instance_val_instances65",
            "coco_2017_train_panoptic", "coco_2017_val_panoptic", "ade20k_panoptic_val", "ade20k_sem_seg_val",
            "ade20k_full_sem_seg_val", "pascal_context_59_sem_seg_val", "pascal_context_459_sem_seg_val"]


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


def _label(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def test_split_tables_are_the_standard_65():
    base = {c["name"] for c in ovsplit_categories("base48")}
    novel = {c["name"] for c in ovsplit_categories("novel17")}
    assert len(base) == 48 and len(novel) == 17 and not base & novel
    assert novel == {"umbrella", "cow", "cup", "bus", "keyboard", "skateboard", "dog", "couch", "tie", "snowboard",
                     "sink", "elephant", "cake", "scissors", "airplane", "cat", "knife"}
    # the 15 COCO classes outside the 65 (Bansal et al.: no WordNet synset or overlapping ImageNet classes)
    excluded = {"traffic light", "fire hydrant", "stop sign", "parking meter", "sports ball", "baseball bat",
                "baseball glove", "tennis racket", "wine glass", "hot dog", "potted plant", "dining table",
                "cell phone", "teddy bear", "hair drier"}
    from masqclip.data.datasets.coco import panoptic_categories

    coco80 = {c["name"] for c in panoptic_categories() if c["isthing"]}
    assert base == coco80 - novel - excluded
    meta = MetadataCatalog.get("coco_instance_val_instances65")
    assert len(meta.thing_classes) == 65 and set(meta.novel_dataset_ids) == {c["id"] for c in ovsplit_categories("novel17")}
    assert meta.evaluator_type == "coco"


def test_every_official_name_is_registered_and_fails_clearly_when_missing(root):
    for name in OFFICIAL:
        assert name in DatasetCatalog, name
        with pytest.raises(DatasetNotFoundError) as err:
            DatasetCatalog.get(name)
        msg = str(err.value)
        assert str(root) in msg and ("masqclip prepare" in msg or "download" in msg), msg
    with pytest.raises(DatasetNotFoundError, match="masqclip prepare ade20k-847"):
        MetadataCatalog.get("ade20k_full_sem_seg_val").stuff_classes  # noqa: B018 (lazy names)


def test_root_is_read_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "first"))
    with pytest.raises(DatasetNotFoundError, match="first"):
        DatasetCatalog.get("coco_instance_val_base48")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "second"))
    with pytest.raises(DatasetNotFoundError, match="second"):
        DatasetCatalog.get("coco_instance_val_base48")


def test_coco_ovsplit(root):
    expected = make_coco(root)
    with pytest.raises(DatasetNotFoundError, match="masqclip prepare coco-ovsplit"):
        DatasetCatalog.get("coco_instance_val_novel17")
    assert cli(["prepare", "coco-ovsplit"]) == 0
    for phase in ("train", "val"):
        for split, (n_images, n_anns) in expected[f"{phase}_counts"].items():
            recs = DatasetCatalog.get(f"coco_instance_{phase}_{split}")
            assert len(recs) == n_images, (phase, split)
            assert sum(len(r["annotations"]) for r in recs) == n_anns, (phase, split)
            allowed = {c["id"] for c in ovsplit_categories(split)}
            meta = MetadataCatalog.get(f"coco_instance_{phase}_{split}")
            for r in recs:
                for a in r["annotations"]:
                    assert a["dataset_category_id"] in allowed
                    assert meta.thing_dataset_id_to_contiguous_id[a["dataset_category_id"]] == a["category_id"]
    # base48 training keeps only base annotations: image 21's umbrella (novel) is gone
    (rec,) = DatasetCatalog.get("coco_instance_train_base48")
    assert [a["dataset_category_id"] for a in rec["annotations"]] == [1]
    # masks decode to the drawn ones (polygon, compressed and uncompressed RLE)
    m = coco_masks()
    recs = {r["image_id"]: r for r in DatasetCatalog.get("coco_instance_val_instances65")}
    assert recs[11]["height"] == 32 and recs[11]["file_name"].endswith("val2017/000000000011.jpg")
    person, cat = recs[11]["annotations"]
    poly = mask_util.decode(mask_util.merge(mask_util.frPyObjects(person["segmentation"], 32, 40))).astype(bool)
    assert (poly == m["a"]).all()
    dog = recs[13]["annotations"][0]
    assert (mask_util.decode(mask_util.frPyObjects(dog["segmentation"], 32, 40)).astype(bool) == m["d"]).all()
    written = json.loads((root / "coco/annotations/ov_split_48_17/instances_val2017_unseen17.json").read_text())
    assert {c["id"] for c in written["categories"]} == {c["id"] for c in ovsplit_categories("novel17")}


def test_coco_panoptic_semseg(root):
    expected = make_coco(root)
    with pytest.raises(DatasetNotFoundError, match="masqclip prepare coco-panoptic-semseg"):
        DatasetCatalog.get("coco_2017_val_panoptic")
    assert cli(["prepare", "coco-panoptic-semseg", "--phases", "val"]) == 0
    (rec,) = DatasetCatalog.get("coco_2017_val_panoptic")
    assert (_label(rec["sem_seg_file_name"]) == expected["semantic"]).all()
    with Image.open(rec["pan_seg_file_name"]) as im:
        assert (rgb2id(np.asarray(im)) == expected["panoptic_seg"]).all()
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    by_id = {s["id"]: s for s in rec["segments_info"]}
    assert by_id[302]["isthing"] and meta.stuff_classes[by_id[302]["category_id"]] == "person"
    assert meta.stuff_classes[by_id[300]["category_id"]] == "sky, clouds, fog"  # merged-stuff synonyms
    assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80


def test_ade20k_150(root):
    expected = make_ade20k(root)
    assert cli(["prepare", "ade20k-150"]) == 0
    sem = {r["image_id"]: r for r in DatasetCatalog.get("ade20k_sem_seg_val")}
    assert set(sem) == set(expected)
    for stem, exp in expected.items():
        assert sem[stem]["height"] == 24 and sem[stem]["width"] == 30
        assert (_label(sem[stem]["sem_seg_file_name"]) == exp["semantic"]).all()
    assert MetadataCatalog.get("ade20k_sem_seg_val").stuff_classes == ADE_NAMES  # read from objectInfo150.txt
    meta = MetadataCatalog.get("ade20k_panoptic_val")
    # the official panoptic table's short names, whatever objectInfo150.txt says
    assert meta.stuff_classes[:5] == ["wall", "building", "sky", "floor", "tree"] and meta.stuff_classes[8] == "window "
    assert meta.thing_classes[:4] == ["bed", "window ", "cabinet", "person"] and len(meta.thing_classes) == 100
    assert len(meta.stuff_classes) == 150 and meta.evaluator_type == "ade20k_panoptic_seg"
    cats = json.loads((root / "ADEChallengeData2016/ade20k_panoptic_val.json").read_text())["categories"]
    assert cats[0] == {"id": 0, "name": "wall", "isthing": 0, "color": [120, 120, 120]}
    assert cats[149] == {"id": 149, "name": "flag", "isthing": 1, "color": [92, 0, 255]}
    assert cats[19] == {"id": 19, "name": "chair", "isthing": 1, "color": [204, 70, 3]}
    for rec in DatasetCatalog.get("ade20k_panoptic_val"):
        segs = rec["segments_info"]
        kinds = sorted(("thing" if s["isthing"] else "stuff", s["category_id"]) for s in segs)
        assert kinds == sorted(expected[rec["image_id"]]["segments"])
        with Image.open(rec["pan_seg_file_name"]) as im:
            ids = rgb2id(np.asarray(im))
        absent = {s["category_id"] for s in segs if s["id"] not in set(np.unique(ids))}
        assert set(np.unique(ids)) - {0} <= {s["id"] for s in segs}
        assert absent == ({2} if rec["image_id"].endswith("1") else set())  # only the covered sky
        sem_gt = expected[rec["image_id"]]["semantic"]
        assert (ids[sem_gt == 255] == 0).all()  # "other" stays void
        if rec["image_id"].endswith("2"):
            assert (ids[0:2, 20:28] == 0).all()  # person pixels without an instance are void


def test_ade20k_panoptic_stuff_is_measured_before_things_and_covered_stuff_is_kept(root):
    expected = make_ade20k(root)
    assert cli(["prepare", "ade20k-150"]) == 0
    data = json.loads((root / "ADEChallengeData2016/ade20k_panoptic_val.json").read_text())
    for ann in data["annotations"]:
        stuff = expected[ann["image_id"]]["stuff"]
        with Image.open(root / "ADEChallengeData2016/ade20k_panoptic_val" / ann["file_name"]) as im:
            ids = rgb2id(np.asarray(im))
        got = {s["category_id"]: s for s in ann["segments_info"] if s["category_id"] in stuff}
        assert set(got) == set(stuff)
        for cat, (area, bbox) in stuff.items():
            assert (got[cat]["area"], got[cat]["bbox"]) == (area, bbox), (ann["image_id"], cat)
        floor = got[3]  # person 2's instance paints over 12 floor pixels; the JSON keeps the semantic area
        assert floor["area"] == (ids == floor["id"]).sum() + 12
        if ann["image_id"].endswith("1"):
            sky = got[2]  # covered completely by the chair: kept, with no pixel left in the PNG
            assert (sky["area"], sky["bbox"]) == (8, [20, 12, 4, 2]) and not (ids == sky["id"]).any()


def test_ade20k_panoptic_pixel_perfect_prediction_scores_as_official_pq(root):
    """Predicting every ground-truth PNG segment exactly scores below 100 on the official data, as
    panopticapi takes ground-truth areas from the JSON: a stuff segment keeps its area from before
    things were painted over it (floor: 12 pixels more than it has in the PNG, so IoU n / (n + 12)),
    and the sky that the chair covers completely cannot be predicted (a miss)."""
    import torch

    from masqclip.evaluation import PanopticEvaluator

    make_ade20k(root)
    assert cli(["prepare", "ade20k-150"]) == 0
    ev = PanopticEvaluator(dataset_name="ade20k_panoptic_val")
    floor_iou = []
    for rec in DatasetCatalog.get("ade20k_panoptic_val"):
        with Image.open(rec["pan_seg_file_name"]) as im:
            ids = rgb2id(np.asarray(im))
        visible = [seg for seg in rec["segments_info"] if (ids == seg["id"]).any()]  # what a model can predict
        ev.process([rec], [{"panoptic_seg": (torch.as_tensor(ids), visible)}])
        floor = next(seg for seg in rec["segments_info"] if seg["category_id"] == 3)
        n = int((ids == floor["id"]).sum())
        floor_iou.append(n / (n + 12))
    res = ev.evaluate()["panoptic_seg"]
    floor_pq = 100 * sum(floor_iou) / 2  # matched in both images
    # classes: wall, floor, sky (stuff), person, chair (things)
    assert res["PQ_th"] == pytest.approx(100.0)
    assert res["PQ_st"] == pytest.approx((100 + floor_pq + 0) / 3)
    assert res["PQ"] == pytest.approx((100 + floor_pq + 0 + 200) / 5)


def test_ade20k_847(root):
    expected = make_ade20k_full(root)
    assert cli(["prepare", "ade20k-847", "--max-short-side", "20"]) == 0
    names = MetadataCatalog.get("ade20k_full_sem_seg_val").stuff_classes
    assert len(names) == 847 and names[:3] == ["wall", "building, edifice", "sky"]  # the official table
    assert names[846] == "adding machine, totalizer, totaliser"
    recs = {r["image_id"]: r for r in DatasetCatalog.get("ade20k_full_sem_seg_val")}
    assert set(recs) == {"ADE_val_00000001", "ADE_val_00000002"}
    lut = expected["official_labels"]  # class-map value -> official label (wall 0, person 11, dog 259)
    small = recs["ADE_val_00000001"]
    label = _label(small["sem_seg_file_name"])
    want = np.vectorize(lambda v: lut.get(int(v), 65535))(expected["class_maps"]["ADE_val_00000001"])
    assert (label == want).all()  # class 2978 needs the R channel
    assert set(np.unique(label)) == {0, 11, 259, 65535}
    with Image.open(small["sem_seg_file_name"]) as im:
        assert np.asarray(im).dtype == np.uint16
    big = recs["ADE_val_00000002"]  # 40 x 60 -> shorter side 20
    assert (big["height"], big["width"]) == (20, 30) and _label(big["sem_seg_file_name"]).shape == (20, 30)
    assert set(np.unique(_label(big["sem_seg_file_name"]))) <= {0, 11, 65535}
    assert MetadataCatalog.get("ade20k_full_sem_seg_val").ignore_label == 65535
    # the derived table (departs from the official one): classes in train and val, by image count
    cats = prepare_ade20k_847(root, "derived", max_short_side=20)
    assert [c["name"] for c in cats] == expected["classes"] and [c["id"] for c in cats] == expected["values"]
    assert set(np.unique(_label(small["sem_seg_file_name"]))) == {0, 1, 65535}
    # a pinned class table is used as given
    table = root / "table.json"
    table.write_text(json.dumps([{"id": 3105, "name": "dog"}, {"id": 2978, "name": "wall"}]))
    cats = prepare_ade20k_847(root, str(table), max_short_side=20)
    assert [c["name"] for c in cats] == ["dog", "wall"]
    assert set(np.unique(_label(small["sem_seg_file_name"]))) == {0, 1, 65535}


def test_pascal_context(root):
    expected = make_pascal_context(root)
    assert cli(["prepare", "pascal-context-459"]) == 0
    with pytest.raises(DatasetNotFoundError, match="masqclip prepare pascal-context-59"):
        DatasetCatalog.get("pascal_context_59_sem_seg_val")
    assert cli(["prepare", "pascal-context-59"]) == 0
    assert MetadataCatalog.get("pascal_context_459_sem_seg_val").stuff_classes == PASCAL_459
    assert MetadataCatalog.get("pascal_context_59_sem_seg_val").stuff_classes == PASCAL_59
    to59 = {2: 0, 9: 1, 284: 2, 459: 3}
    for n, ignore in ((459, 65535), (59, 255)):
        recs = DatasetCatalog.get(f"pascal_context_{n}_sem_seg_val")
        assert [r["image_id"] for r in recs] == expected["ids"]
        for r in recs:
            lm = expected["label_maps"][r["image_id"]]
            want = np.where(lm == 0, ignore, lm - 1) if n == 459 else np.vectorize(lambda v: to59.get(int(v), 255))(lm)
            assert (_label(r["sem_seg_file_name"]) == want).all(), (n, r["image_id"])
            assert (r["height"], r["width"]) == (12, 14)


def test_incomplete_prepared_dataset_names_what_is_missing(root):
    make_pascal_context(root)
    assert cli(["prepare", "pascal-context-59"]) == 0
    (root / "pascal_context_full/labels_59/2008_000002.png").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        DatasetCatalog.get("pascal_context_59_sem_seg_val")
    assert "2008_000002.png" in str(err.value) and "masqclip prepare pascal-context-59" in str(err.value)


def test_prepare_reports_missing_raw_input(root, capsys):
    assert cli(["prepare", "ade20k-150"]) == 2
    err = capsys.readouterr().err
    assert "objectInfo150.txt" in err and "sceneparsing" in err
