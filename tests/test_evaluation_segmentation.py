"""Semantic (hand-computed mIoU) and panoptic (against panopticapi called directly) evaluators."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from panopticapi.evaluation import pq_compute
from panopticapi.utils import id2rgb
from PIL import Image

from masqclip.data.catalog import DatasetCatalog, MetadataCatalog
from masqclip.evaluation import PanopticEvaluator, SemSegEvaluator
from masqclip.evaluation.semantic import confusion_matrix, segmentation_metrics


def _onehot_logits(labels: np.ndarray, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels), k).permute(2, 0, 1).float()


GT = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])


@pytest.mark.parametrize("num_classes", [3, 4])  # class 3 has no ground truth: left out of the means
def test_semantic_hand_computed(tmp_path, num_classes):
    # IoU: class 0 = 1/3, class 1 = 2/3, class 2 = 1/2; acc: 1/2, 1, 1/2; 4 of 6 valid pixels right
    gt_path = tmp_path / "gt.png"
    Image.fromarray(GT.astype(np.uint8)).save(gt_path)
    ev = SemSegEvaluator(class_names=[f"c{i}" for i in range(num_classes)], ignore_label=255,
                         output_dir=str(tmp_path))
    ev.reset()
    ev.process([{"sem_seg_file_name": str(gt_path)}], [{"sem_seg": _onehot_logits(PRED, num_classes)}])
    res = ev.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(50.0) and res["mIoU_d2v06"] == pytest.approx(50.0)
    assert res["fwIoU"] == pytest.approx(50.0)
    assert res["mACC"] == pytest.approx(200 / 3)
    assert res["pACC"] == pytest.approx(200 / 3)
    assert res["IoU-c1"] == pytest.approx(200 / 3) and "IoU-c3" not in res
    assert json.loads((tmp_path / "sem_seg_evaluation.json").read_text())["sem_seg"]["mIoU"] == pytest.approx(50.0)


def test_semantic_prediction_on_ignored_pixels_does_not_count():
    conf = confusion_matrix(PRED, GT, 3, 255)
    assert conf.sum() == 6 and conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_semantic_perfect_uint16_tif_with_65535_ignore(tmp_path):
    k = 600  # more classes than uint8 holds, as ADE20K-847 / Pascal Context 459
    rng = np.random.default_rng(1)
    gt = rng.integers(0, k, size=(9, 11)).astype(np.uint16)
    gt[0, :] = 65535
    path = tmp_path / "gt.tif"
    Image.fromarray(gt).save(path)
    pred = gt.astype(np.int64).copy()
    pred[0, :] = 5  # anything on ignored pixels
    ev = SemSegEvaluator(class_names=[str(i) for i in range(k)], ignore_label=65535)
    ev.process([{"sem_seg_file_name": str(path)}], [{"sem_seg": _onehot_logits(pred, k)}])
    res = ev.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)


def test_both_miou_conventions_hand_computed():
    # rows = ground truth, columns = prediction. Class 0: 4 gt pixels, 3 right, 1 called class 1.
    # Class 1: no gt, 3 predicted pixels (predicted only). Class 2: 2 gt pixels, both called class 1.
    # Class 3: neither. IoU 0 = 3/4, IoU 2 = 0.
    conf = np.array([[3, 1, 0, 0], [0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]])
    res = segmentation_metrics(conf)
    assert res["mIoU"] == pytest.approx(100 * (0.75 + 0) / 2)  # over gt classes 0, 2
    assert res["mIoU_d2v06"] == pytest.approx(100 * (0.75 + 0) / 3)  # over classes in gt or predictions: 0, 1, 2
    # without a predicted-only class the two agree
    agree = segmentation_metrics(np.array([[3, 0, 1], [0, 0, 0], [1, 0, 1]]))
    assert agree["mIoU_d2v06"] == pytest.approx(agree["mIoU"]) == pytest.approx(100 * (3 / 5 + 1 / 3) / 2)


def test_metrics_of_empty_matrix_are_zero():
    empty = segmentation_metrics(np.zeros((3, 3), dtype=np.int64))
    assert empty["mIoU"] == 0.0 and empty["mIoU_d2v06"] == 0.0


# ---------------------------------------------------------------------------------------------
# panoptic
# ---------------------------------------------------------------------------------------------
H, W = 24, 32
CATEGORIES = [{"id": 1, "name": "person", "isthing": 1}, {"id": 4, "name": "car", "isthing": 1},
              {"id": 20, "name": "sky", "isthing": 0}, {"id": 21, "name": "grass", "isthing": 0}]
TO_CONTIG = {c["id"]: i for i, c in enumerate(CATEGORIES)}


def _gt_images():
    """Two images: segment-id maps and their (id -> dataset category) lists."""
    a = np.zeros((H, W), dtype=np.int64)
    a[:12] = 1  # sky
    a[12:] = 2  # grass
    a[4:10, 3:9] = 3  # person
    a[14:22, 15:30] = 4  # car
    a[0, 0:4] = 0  # void
    b = np.full((H, W), 7, dtype=np.int64)  # grass everywhere
    b[2:20, 2:10] = 8  # person
    b[2:20, 12:20] = 9  # person
    return {"img_a": (a, {1: 20, 2: 21, 3: 1, 4: 4}), "img_b": (b, {7: 21, 8: 1, 9: 1})}


@pytest.fixture
def panoptic_dataset(tmp_path):
    gt_root = tmp_path / "gt"
    gt_root.mkdir()
    images, annotations = [], []
    for image_id, (seg, cats) in _gt_images().items():
        Image.fromarray(id2rgb(seg)).save(gt_root / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": H, "width": W})
        annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": [
            {"id": sid, "category_id": c, "iscrowd": 0, "area": int((seg == sid).sum())} for sid, c in cats.items()]})
    gt_json = tmp_path / "gt.json"
    gt_json.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    name = "test_eval_panoptic"
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(
        panoptic_json=str(gt_json), panoptic_root=str(gt_root), evaluator_type="coco_panoptic_seg",
        stuff_classes=[c["name"] for c in CATEGORIES],
        thing_dataset_id_to_contiguous_id={c["id"]: TO_CONTIG[c["id"]] for c in CATEGORIES if c["isthing"]},
        stuff_dataset_id_to_contiguous_id={c["id"]: TO_CONTIG[c["id"]] for c in CATEGORIES if not c["isthing"]})
    yield name, gt_json, gt_root
    DatasetCatalog.remove(name)


def _run_panoptic(name, predictions, output_dir=None):
    ev = PanopticEvaluator(dataset_name=name, output_dir=output_dir)
    ev.reset()
    for image_id, (seg, cats) in predictions.items():
        info = [{"id": sid, "category_id": TO_CONTIG[c], "isthing": TO_CONTIG[c] < 2} for sid, c in cats.items()]
        ev.process([{"image_id": image_id, "file_name": f"/x/{image_id}.jpg"}],
                   [{"panoptic_seg": (torch.as_tensor(seg, dtype=torch.int32), info)}])
    return ev.evaluate()["panoptic_seg"]


def test_panoptic_perfect_gives_100(panoptic_dataset, tmp_path):
    name, _, _ = panoptic_dataset
    res = _run_panoptic(name, _gt_images(), output_dir=str(tmp_path / "out"))
    for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "RQ_st"):
        assert res[key] == pytest.approx(100.0), key
    assert (tmp_path / "out" / "panoptic_evaluation.json").is_file()


def _imperfect():
    gt = _gt_images()
    a, cats_a = gt["img_a"][0].copy(), dict(gt["img_a"][1])
    a[4:10, 3:6] = 1  # person half eaten by sky: IoU 0.5, not a match
    a[14:22, 15:18] = 2  # car slightly smaller: still a match
    cats_a[4] = 4
    b, cats_b = gt["img_b"][0].copy(), {7: 21, 8: 1, 9: 4}  # second person called a car
    b[20:, :] = 55  # an unlisted segment id: void
    return {"img_a": (a, cats_a), "img_b": (b, cats_b)}


def test_panoptic_agrees_with_panopticapi(panoptic_dataset, tmp_path):
    name, gt_json, gt_root = panoptic_dataset
    preds = _imperfect()
    res = _run_panoptic(name, preds)
    # the same predictions written by hand and scored by panopticapi's own entry point
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    anns = []
    for image_id, (seg, cats) in preds.items():
        seg = np.where(np.isin(seg, list(cats)), seg, 0)
        Image.fromarray(id2rgb(seg)).save(pred_dir / f"{image_id}.png")
        anns.append({"image_id": image_id, "file_name": f"{image_id}.png",
                     "segments_info": [{"id": s, "category_id": c} for s, c in cats.items()]})
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": anns}))
    ref = pq_compute(str(gt_json), str(pred_json), str(gt_root), str(pred_dir))
    assert 0 < res["PQ"] < 100
    for ours, theirs in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for m in ("pq", "sq", "rq"):
            assert res[m.upper() + ours] == pytest.approx(100 * ref[theirs][m]), m + ours
