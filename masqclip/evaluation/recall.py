"""Class-agnostic proposal recall: AR@k over base and novel ground truth.

The diagnostic of distillation: does the mask generator find objects of classes it was never
trained on? A ground-truth mask counts as recalled at IoU t by the top-k proposals (ranked by
score, classes ignored) when one of them overlaps it with mask IoU >= t. ``AR@k`` uses one
threshold (0.5 by default); ``mAR@k`` averages recall over a list of thresholds (0.5:0.95).

``AR@conf`` counts only the proposals scored >= ``score_threshold`` (default 0.8, the paper's
distillation alpha: the confidence at which a teacher's mask counts as a found object). With few
queries ``AR@k`` soon covers every query, mask quality alone decides it, and an object the
generator has learned to call background still counts as found; ``AR@conf`` shows whether the
generator *claims* the unannotated objects, which is what distillation changes and what the object
score passes on to the final ranking.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pycocotools.mask as mask_util

from ..data.catalog import DatasetCatalog, MetadataCatalog
from .evaluator import DatasetEvaluator, gather_on_main, write_results
from .masks import annotation_to_rle, contiguous_to_dataset_ids, prediction_rles


def best_iou_at_k(pred_rles: list[dict], gt_rles: list[dict], topk: Sequence[int]) -> np.ndarray:
    """For each ground-truth mask, its best IoU with the first k proposals, for every k.

    Args:
        pred_rles: proposals as RLEs, best score first.
        gt_rles: ground-truth RLEs (G of them).

    Returns:
        float [G, len(topk)].
    """
    out = np.zeros((len(gt_rles), len(topk)))
    if not pred_rles or not gt_rles:
        return out
    iou = np.asarray(mask_util.iou(pred_rles, gt_rles, [0] * len(gt_rles))).reshape(len(pred_rles), len(gt_rles))
    running = np.maximum.accumulate(iou, axis=0)  # [P, G]: best over the first p+1 proposals
    for j, k in enumerate(topk):
        if k > 0:  # k = 0: no proposal, IoU 0
            out[:, j] = running[min(k, len(pred_rles)) - 1]
    return out


class ProposalRecallEvaluator(DatasetEvaluator):
    """AR@k of ``outputs[i]["instances"]`` (masks + scores, classes ignored) against the dataset's
    non-crowd instance annotations, split by the metadata's ``base_dataset_ids`` / ``novel_dataset_ids``.
    """

    def __init__(self, *, dataset_name: str, topk: Sequence[int], iou_threshold: float,
                 mean_iou_thresholds: Sequence[float], score_threshold: float = 0.5, output_dir: str | None = None):
        self.dataset_name = dataset_name
        self.metadata = MetadataCatalog.get(dataset_name)
        self.topk = [int(k) for k in topk]
        self.iou_threshold = float(iou_threshold)
        self.mean_iou_thresholds = [float(t) for t in mean_iou_thresholds]
        self.score_threshold = float(score_threshold)
        self.output_dir = output_dir
        self._gt: dict | None = None
        self.reset()

    def reset(self) -> None:
        self._best: list[np.ndarray] = []  # per image [G, len(topk) + 1]: the last column is AR@conf's
        self._categories: list[np.ndarray] = []  # per image [G] dataset category ids

    def _ground_truth(self) -> dict:
        if self._gt is None:
            to_dataset = contiguous_to_dataset_ids(self.metadata)
            self._gt = {}
            for rec in DatasetCatalog.get(self.dataset_name):
                anns = [a for a in rec.get("annotations", []) if not a.get("iscrowd", 0)]
                self._gt[rec["image_id"]] = (
                    [annotation_to_rle(a["segmentation"], rec["height"], rec["width"]) for a in anns],
                    np.array([a.get("dataset_category_id", to_dataset.get(a["category_id"], a["category_id"]))
                              for a in anns], dtype=np.int64),
                )
        return self._gt

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        gt = self._ground_truth()
        for inp, out in zip(inputs, outputs):
            if inp["image_id"] not in gt:
                raise KeyError(f"{self.dataset_name}: no ground truth for image {inp['image_id']!r}")
            gt_rles, cats = gt[inp["image_id"]]
            inst = out["instances"].to("cpu")
            order = inst.scores.argsort(descending=True)
            num_confident = int((inst.scores >= self.score_threshold).sum())
            order = order[: max(max(self.topk), num_confident)]
            rles = prediction_rles(out)
            pred_rles = [rles[i] for i in order.tolist()]
            self._best.append(best_iou_at_k(pred_rles, gt_rles, [*self.topk, num_confident]))
            self._categories.append(cats)

    def evaluate(self) -> dict[str, dict[str, float]]:
        parts = gather_on_main(list(zip(self._best, self._categories)))
        if parts is None:
            return {}
        best = np.concatenate([b for b, _ in parts]) if parts else np.zeros((0, len(self.topk) + 1))
        cats = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, dtype=np.int64)
        subsets = {"": np.ones(len(cats), dtype=bool)}
        for tag in ("base", "novel"):
            ids = self.metadata.get(f"{tag}_dataset_ids")
            if ids is not None:
                subsets[f"_{tag}"] = np.isin(cats, list(ids))
        results: dict[str, float] = {}
        for suffix, sel in subsets.items():
            if not sel.any():
                continue
            for j, k in enumerate([*self.topk, "conf"]):
                results[f"AR@{k}{suffix}"] = 100.0 * float((best[sel, j] >= self.iou_threshold).mean())
                results[f"mAR@{k}{suffix}"] = 100.0 * float(np.mean(
                    [(best[sel, j] >= t).mean() for t in self.mean_iou_thresholds]))
            results[f"num_gt{suffix}"] = float(sel.sum())
        results["conf_score_threshold"] = self.score_threshold
        write_results(self.output_dir, "proposal_recall.json", {"dataset": self.dataset_name, "proposals": results})
        return {"proposals": results}
