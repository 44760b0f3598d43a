"""Instance segmentation: COCO mask AP via pycocotools, and the open-vocabulary base/novel split.

"Generalized" evaluation (the paper's): score all classes of the dataset at once, then average
the per-category AP50 over the base and over the novel categories separately. "Constrained"
evaluation needs nothing special: the dataset itself (base48 or novel17) has only that split's
classes.
"""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.catalog import DatasetCatalog, MetadataCatalog
from ..data.datasets.common import resolve_path
from .evaluator import DatasetEvaluator, gather_on_main, write_results
from .masks import annotation_to_rle, contiguous_to_dataset_ids, prediction_rles

logger = logging.getLogger(__name__)
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def records_to_coco(records: list[dict], metadata) -> dict:
    """Dataset records (``annotations`` with contiguous ``category_id``) -> a COCO ground-truth dict."""
    to_dataset = contiguous_to_dataset_ids(metadata)
    names = list(metadata.get("thing_classes") or [])
    categories = [{"id": to_dataset.get(i, i), "name": n} for i, n in enumerate(names)]
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec["image_id"], "height": rec["height"], "width": rec["width"],
                       "file_name": rec.get("file_name", "")})
        for ann in rec.get("annotations", []):
            rle = annotation_to_rle(ann["segmentation"], rec["height"], rec["width"])
            rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}  # JSON-ready
            cat = ann.get("dataset_category_id", to_dataset.get(ann["category_id"], ann["category_id"]))
            annotations.append({"id": len(annotations) + 1, "image_id": rec["image_id"], "category_id": cat,
                                "segmentation": rle, "area": float(mask_util.area(rle)), "bbox": ann.get("bbox", [0, 0, 0, 0]),
                                "iscrowd": int(ann.get("iscrowd", 0))})
    return {"images": images, "annotations": annotations, "categories": categories}


def load_coco_gt(dataset_name: str, metadata) -> COCO:
    """The ground truth as a pycocotools ``COCO``: the metadata's ``json_file`` when it exists,
    else built from the registered records."""
    json_file = metadata.get("json_file")
    with contextlib.redirect_stdout(io.StringIO()):
        if json_file and resolve_path(json_file).is_file():
            return COCO(str(resolve_path(json_file)))
        coco = COCO()
        coco.dataset = records_to_coco(DatasetCatalog.get(dataset_name), metadata)
        coco.createIndex()
    return coco


def category_ap50(coco_eval: COCOeval) -> dict[int, float]:
    """Per-category mask AP at IoU 0.5 (all areas, the largest maxDets) of an accumulated COCOeval,
    in 0-1; categories without ground truth are left out."""
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    t50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
    out = {}
    for k, cat in enumerate(coco_eval.params.catIds):
        p = precision[t50, :, k, 0, -1]
        if (p > -1).any():
            out[cat] = float(p[p > -1].mean())
    return out


def category_ap(coco_eval: COCOeval) -> dict[int, float]:
    """Per-category mask AP averaged over IoU 0.5:0.95, as :func:`category_ap50`."""
    precision = coco_eval.eval["precision"]
    out = {}
    for k, cat in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            out[cat] = float(p[p > -1].mean())
    return out


def split_mean(per_category: dict[int, float], ids) -> float | None:
    """Mean (in %) of ``per_category`` over ``ids``; None when none of them has ground truth."""
    values = [per_category[i] for i in ids if i in per_category]
    return 100.0 * float(np.mean(values)) if values else None


class InstanceSegEvaluator(DatasetEvaluator):
    """COCO mask AP of ``outputs[i]["instances"]`` (``pred_masks``, ``pred_classes``, ``scores``).

    With ``base_dataset_ids`` / ``novel_dataset_ids`` in the metadata it also reports ``AP50_base``,
    ``AP50_novel``, ``AP50_all`` (and ``AP_base`` / ``AP_novel``) over the dataset's categories of each.
    """

    def __init__(self, *, dataset_name: str, output_dir: str | None = None, max_dets: int = 100):
        self.dataset_name = dataset_name
        self.metadata = MetadataCatalog.get(dataset_name)
        self.output_dir = output_dir
        self.max_dets = int(max_dets)
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []
        self._image_ids: list = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        to_dataset = contiguous_to_dataset_ids(self.metadata)
        for inp, out in zip(inputs, outputs):
            self._image_ids.append(inp["image_id"])
            inst = out["instances"].to("cpu")
            rles = prediction_rles(out)
            for rle, cls, score in zip(rles, inst.pred_classes.tolist(), inst.scores.tolist()):
                self._predictions.append({"image_id": inp["image_id"], "category_id": to_dataset.get(cls, cls),
                                          "segmentation": rle, "score": float(score)})

    def evaluate(self) -> dict[str, dict[str, float]]:
        predictions, image_ids = gather_on_main(self._predictions), gather_on_main(self._image_ids)
        if predictions is None:
            return {}
        results = self.score(predictions, image_ids)
        write_results(self.output_dir, "instance_evaluation.json",
                      {"dataset": self.dataset_name, "segm": results})
        return {"segm": results}

    def score(self, predictions: list[dict], image_ids: list) -> dict[str, float]:
        """COCO figures (percent) of ``predictions`` (COCO result dicts) on the images ``image_ids``
        (the processed ones: a partial pass is scored on its own images only)."""
        gt = load_coco_gt(self.dataset_name, self.metadata)
        if not predictions:
            logger.warning("%s: no instance predictions; every AP is 0", self.dataset_name)
            results = {k: 0.0 for k in COCO_STATS}
            with_gt = {a["category_id"] for a in gt.dataset.get("annotations", [])}
            for tag in ("base", "novel"):
                if with_gt & set(self.metadata.get(f"{tag}_dataset_ids") or []):
                    results.update({f"AP50_{tag}": 0.0, f"AP_{tag}": 0.0, "AP50_all": 0.0})
        else:
            with contextlib.redirect_stdout(io.StringIO()) as log:
                dt = gt.loadRes([dict(p) for p in predictions])  # loadRes edits its input
                coco_eval = COCOeval(gt, dt, iouType="segm")
                coco_eval.params.imgIds = sorted(set(image_ids))
                coco_eval.params.maxDets = [1, 10, self.max_dets]
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
            logger.info("%s COCO mask evaluation:\n%s", self.dataset_name, log.getvalue())
            results = {k: 100.0 * max(float(v), 0.0) for k, v in zip(COCO_STATS, coco_eval.stats)}
            results.update(self._split_results(coco_eval))
        return results

    def _split_results(self, coco_eval: COCOeval) -> dict[str, float]:
        ap50, ap = category_ap50(coco_eval), category_ap(coco_eval)
        names = {c["id"]: c["name"] for c in coco_eval.cocoGt.loadCats(coco_eval.params.catIds)}
        results = {f"AP-{names[c]}": 100.0 * v for c, v in ap.items()}
        base, novel = self.metadata.get("base_dataset_ids"), self.metadata.get("novel_dataset_ids")
        if base is None and novel is None:
            return results
        results["AP50_all"] = split_mean(ap50, coco_eval.params.catIds)
        for tag, ids in (("base", base or []), ("novel", novel or [])):
            for key, table in ((f"AP50_{tag}", ap50), (f"AP_{tag}", ap)):
                value = split_mean(table, ids)
                if value is not None:
                    results[key] = value
        return {k: v for k, v in results.items() if v is not None}
