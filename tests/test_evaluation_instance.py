"""Instance AP (generalized base/novel split) and class-agnostic proposal recall, on hand-built masks."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from masqclip.data.catalog import DatasetCatalog, MetadataCatalog
from masqclip.evaluation import InstanceSegEvaluator, ProposalRecallEvaluator
from masqclip.evaluation.masks import encode_masks
from masqclip.structures import Instances

H = W = 40
# dataset id -> (name, base?)
CATS = {3: ("apple", True), 7: ("cow", False), 9: ("chair", True), 12: ("knife", False)}
IDS = sorted(CATS)
CONTIG = {d: i for i, d in enumerate(IDS)}


def _box(y0, x0, y1, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# per image: list of (dataset category id, mask)
WORLD = {
    101: [(3, _box(0, 0, 10, 10)), (7, _box(12, 12, 30, 30)), (9, _box(30, 0, 40, 12))],
    102: [(12, _box(5, 20, 15, 38)), (3, _box(20, 0, 36, 16)), (7, _box(0, 0, 4, 4))],
    103: [(9, _box(10, 10, 25, 25)), (12, _box(28, 28, 38, 38))],
}


def _records(polygon_first: bool = False):
    recs = []
    for image_id, objs in WORLD.items():
        anns = []
        for k, (cat, m) in enumerate(objs):
            if polygon_first and k == 0:
                ys, xs = np.nonzero(m)
                y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
                seg = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
            else:
                seg = encode_masks(m[None])[0]
            anns.append({"segmentation": seg, "category_id": CONTIG[cat], "dataset_category_id": cat, "iscrowd": 0,
                         "bbox": [0, 0, 1, 1], "bbox_mode": 1})
        recs.append({"file_name": f"{image_id}.png", "image_id": image_id, "height": H, "width": W,
                     "annotations": anns})
    return recs


@pytest.fixture
def dataset():
    name = "test_eval_instances"
    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, _records)
    MetadataCatalog.get(name).set(
        thing_classes=[CATS[d][0] for d in IDS], thing_dataset_id_to_contiguous_id=dict(CONTIG),
        base_dataset_ids=[d for d in IDS if CATS[d][1]], novel_dataset_ids=[d for d in IDS if not CATS[d][1]],
        evaluator_type="coco")
    yield name
    DatasetCatalog.remove(name)


def _output(objs, scores=None):
    masks = torch.as_tensor(np.stack([m for _, m in objs])) if objs else torch.zeros(0, H, W, dtype=torch.bool)
    classes = torch.tensor([CONTIG[c] for c, _ in objs], dtype=torch.int64)
    scores = torch.tensor(scores if scores is not None else [1.0] * len(objs))
    return {"instances": Instances((H, W), pred_masks=masks, pred_classes=classes, scores=scores)}


def _run(evaluator, predictions):
    evaluator.reset()
    for image_id in WORLD:
        evaluator.process([{"image_id": image_id, "file_name": f"{image_id}.png"}], [predictions[image_id]])
    return evaluator.evaluate()


def _perturbed_predictions():
    """Shifted masks, a wrong class, a duplicate and a false positive, with varied scores."""
    rng = np.random.default_rng(0)
    preds = {}
    for image_id, objs in WORLD.items():
        out = []
        for cat, m in objs:
            shift = int(rng.integers(0, 4))
            out.append((cat, np.roll(m, shift, axis=1)))
        out.append((IDS[image_id % 4], _box(0, 30, 8, 40)))  # false positive
        out.append((objs[0][0], objs[0][1]))  # duplicate of the first
        scores = rng.uniform(0.1, 1.0, size=len(out)).tolist()
        preds[image_id] = _output(out, scores)
    preds[102]["instances"].pred_classes[0] = CONTIG[3]  # knife predicted as apple
    return preds


def test_perfect_predictions_give_100(dataset, tmp_path):
    ev = InstanceSegEvaluator(dataset_name=dataset, output_dir=str(tmp_path))
    res = _run(ev, {i: _output(objs) for i, objs in WORLD.items()})["segm"]
    for key in ("AP", "AP50", "AP75", "AP50_base", "AP50_novel", "AP50_all", "AP_base", "AP_novel"):
        assert res[key] == pytest.approx(100.0), key
    written = json.loads((tmp_path / "instance_evaluation.json").read_text())
    assert written["segm"]["AP50"] == pytest.approx(100.0)


def test_agrees_with_pycocotools_and_split_equals_restricted_eval(dataset):
    preds = _perturbed_predictions()
    res = _run(InstanceSegEvaluator(dataset_name=dataset), preds)["segm"]

    # pycocotools called directly on the same ground truth and detections
    from masqclip.evaluation.instance import records_to_coco

    gt = COCO()
    gt.dataset = records_to_coco(_records(), MetadataCatalog.get(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    dets = []
    inv = {v: k for k, v in CONTIG.items()}
    for image_id, out in preds.items():
        inst = out["instances"]
        for rle, c, s in zip(encode_masks(inst.pred_masks), inst.pred_classes.tolist(), inst.scores.tolist()):
            dets.append({"image_id": image_id, "category_id": inv[c], "segmentation": rle, "score": s})

    def direct(cat_ids=None):
        with contextlib.redirect_stdout(io.StringIO()):
            e = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), iouType="segm")
            if cat_ids is not None:
                e.params.catIds = cat_ids
            e.evaluate(), e.accumulate(), e.summarize()
        return e.stats

    stats = direct()
    assert 0 < res["AP50"] < 100
    assert res["AP"] == pytest.approx(100 * stats[0])
    assert res["AP50"] == pytest.approx(100 * stats[1])
    assert res["AP50_all"] == pytest.approx(100 * stats[1])
    meta = MetadataCatalog.get(dataset)
    assert res["AP50_base"] == pytest.approx(100 * direct(meta.base_dataset_ids)[1])
    assert res["AP50_novel"] == pytest.approx(100 * direct(meta.novel_dataset_ids)[1])
    assert res["AP_novel"] == pytest.approx(100 * direct(meta.novel_dataset_ids)[0])


def test_novel_perfect_base_wrong_gives_100_and_0(dataset):
    preds = {}
    for image_id, objs in WORLD.items():
        out = []
        for cat, m in objs:
            if CATS[cat][1]:  # base object: right class, mask in the wrong place
                out.append((cat, np.roll(np.roll(m, H // 2, axis=0), W // 2, axis=1) & ~m))
            else:
                out.append((cat, m))
        preds[image_id] = _output(out)
    res = _run(InstanceSegEvaluator(dataset_name=dataset), preds)["segm"]
    assert res["AP50_novel"] == pytest.approx(100.0)
    assert res["AP50_base"] == pytest.approx(0.0)
    assert res["AP50_all"] == pytest.approx(50.0)  # 2 base + 2 novel categories


def test_json_file_ground_truth_and_no_predictions(dataset, tmp_path):
    from masqclip.evaluation.instance import records_to_coco

    path = tmp_path / "gt.json"
    path.write_text(json.dumps(records_to_coco(_records(polygon_first=True), MetadataCatalog.get(dataset))))
    MetadataCatalog.get(dataset).set(json_file=str(path))
    res = _run(InstanceSegEvaluator(dataset_name=dataset), {i: _output(o) for i, o in WORLD.items()})["segm"]
    assert res["AP50"] == pytest.approx(100.0)  # polygon ground truth decodes to the same boxes
    empty = _run(InstanceSegEvaluator(dataset_name=dataset), {i: _output([]) for i in WORLD})["segm"]
    assert empty["AP"] == 0.0 and empty["AP50"] == 0.0
    assert empty["AP50_base"] == 0.0 and empty["AP50_novel"] == 0.0  # the table keys exist


# ---------------------------------------------------------------------------------------------
# proposal recall
# ---------------------------------------------------------------------------------------------

def _recall(dataset, preds, topk=(1, 2, 3, 100), score_threshold=0.5):
    ev = ProposalRecallEvaluator(dataset_name=dataset, topk=topk, iou_threshold=0.5, score_threshold=score_threshold,
                                 mean_iou_thresholds=[0.5 + 0.05 * i for i in range(10)])
    return _run(ev, preds)["proposals"]


def test_recall_perfect_is_100_and_class_agnostic(dataset):
    # every prediction carries class 0 (a class-agnostic teacher): recall ignores classes
    preds = {}
    for image_id, objs in WORLD.items():
        out = _output(objs)
        out["instances"].pred_classes.zero_()
        preds[image_id] = out
    res = _recall(dataset, preds)
    for key in ("AR@100", "AR@100_base", "AR@100_novel", "mAR@100", "mAR@100_novel"):
        assert res[key] == pytest.approx(100.0), key
    assert res["num_gt"] == 8 and res["num_gt_base"] == 4 and res["num_gt_novel"] == 4


def test_recall_known_answers(dataset):
    # image 101: apple(base) 10x10, cow(novel) 18x18, chair(base) 10x12
    apple, cow, chair = (m for _, m in WORLD[101])
    half_apple = apple.copy()
    half_apple[:, 5:] = False  # IoU with apple = 0.5 exactly
    preds = {
        101: _output([(3, cow), (3, half_apple), (3, chair)], scores=[0.9, 0.8, 0.7]),
        102: _output([]),
        103: _output([(3, _box(0, 0, 2, 2))], scores=[0.5]),
    }
    res = _recall(dataset, preds)
    # 8 GT (4 base, 4 novel); top-1: cow; top-2: + apple at IoU 0.5; top-3: + chair
    assert res["AR@1"] == pytest.approx(100 * 1 / 8)
    assert res["AR@2"] == pytest.approx(100 * 2 / 8)
    assert res["AR@3"] == pytest.approx(100 * 3 / 8)
    assert res["AR@1_novel"] == pytest.approx(25.0) and res["AR@1_base"] == 0.0
    assert res["AR@3_base"] == pytest.approx(50.0) and res["AR@3_novel"] == pytest.approx(25.0)
    # averaged over 0.5:0.95: exact matches count at all 10 thresholds, the half apple at 1
    assert res["mAR@3"] == pytest.approx(100 * (10 + 1 + 10) / 10 / 8)
    assert res["mAR@2_base"] == pytest.approx(100 * (1 / 10) / 4)
    # confident proposals (score >= 0.8): cow and the half apple; chair (0.7) does not count
    conf = _recall(dataset, preds, score_threshold=0.8)
    assert conf["AR@conf"] == pytest.approx(100 * 2 / 8) and conf["conf_score_threshold"] == 0.8
    assert conf["AR@conf_novel"] == pytest.approx(25.0) and conf["AR@conf_base"] == pytest.approx(25.0)
    assert conf["AR@100"] == res["AR@100"]  # the top-k figures ignore the score threshold
    # threshold 0.5 keeps everything scored here, including image 103's miss
    assert res["AR@conf"] == pytest.approx(res["AR@100"])
    # above every score: nothing is claimed, and a proposal cap below the confident count is not a limit
    assert _recall(dataset, preds, score_threshold=0.95)["AR@conf"] == 0.0
    assert _recall(dataset, preds, topk=(1,), score_threshold=0.6)["AR@conf"] == pytest.approx(100 * 3 / 8)


def test_encode_masks_roundtrip():
    m = np.zeros((2, 5, 7), dtype=bool)
    m[0, 1:3, 2:6] = True
    m[1, 4, 6] = True
    rles = encode_masks(torch.as_tensor(m))
    assert all(isinstance(r["counts"], str) for r in rles)
    back = mask_util.decode([{**r, "counts": r["counts"].encode()} for r in rles]).transpose(2, 0, 1)
    assert (back.astype(bool) == m).all()
    assert encode_masks(np.zeros((0, 5, 7), dtype=bool)) == []


def test_mask_ap_and_recall_share_one_encoding_with_unchanged_results(dataset, monkeypatch):
    """Run together (as an instance test set's evaluators are), mask AP and proposal recall encode
    each output's masks once and report exactly what each reports alone; float masks binarise at 0.5."""
    import masqclip.evaluation.masks as masks_module
    from masqclip.evaluation import DatasetEvaluators

    def fresh():
        preds = _perturbed_predictions()
        for out in preds.values():  # soft masks, as the models return them
            out["instances"].pred_masks = out["instances"].pred_masks.float() * 0.9 + 0.05
        return preds

    def recall():
        return ProposalRecallEvaluator(dataset_name=dataset, topk=(1, 3, 100), iou_threshold=0.5,
                                       score_threshold=0.5, mean_iou_thresholds=[0.5, 0.75])

    alone = {**_run(InstanceSegEvaluator(dataset_name=dataset), fresh()), **_run(recall(), fresh())}
    calls = []
    real = masks_module.encode_masks
    monkeypatch.setattr(masks_module, "encode_masks", lambda m: calls.append(len(m)) or real(m))
    together = _run(DatasetEvaluators([recall(), InstanceSegEvaluator(dataset_name=dataset)]), fresh())
    assert together == alone and len(calls) == len(WORLD)
    assert alone["segm"]["AP"] < 100.0 and alone["proposals"]["AR@1"] < alone["proposals"]["AR@100"]
    out = fresh()[101]
    first = masks_module.prediction_rles(out)
    out["instances"].pred_masks = 1.0 - out["instances"].pred_masks  # replaced masks: encoded afresh
    assert masks_module.prediction_rles(out) == real(out["instances"].pred_masks > 0.5) != first
