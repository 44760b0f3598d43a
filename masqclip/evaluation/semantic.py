"""Semantic segmentation: mIoU, fwIoU, mACC, pACC from a confusion matrix, with an ignore label.

Two mIoU conventions (detectron2 changed its evaluator on 2022-07-06, after its v0.6 release):

- ``mIoU``: the mean IoU over the classes present in the ground truth (detectron2 since then);
- ``mIoU_d2v06``: detectron2 v0.6's, the same IoU sum divided by the number of classes present in
  the ground truth OR the predictions (a class that is only predicted counts as 0).

Both count only non-ignored pixels.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .evaluator import DatasetEvaluator, gather_on_main, write_results


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """Counts of (ground truth, prediction) pairs over the non-ignored pixels.

    Args:
        pred: int [H, W] predicted classes in ``[0, num_classes)``.
        gt: int [H, W] ground-truth classes; ``ignore_label`` (and anything >= num_classes) is skipped.

    Returns:
        int64 [num_classes, num_classes], rows = ground truth, columns = prediction.
    """
    gt = gt.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = (gt != ignore_label) & (gt >= 0) & (gt < num_classes)
    return np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def segmentation_metrics(conf: np.ndarray, class_names: list[str] | None = None) -> dict[str, float]:
    """Percent metrics of a [K, K] confusion matrix (rows ground truth).

    Classes without ground-truth pixels are left out of the means (their predictions still lower
    the IoU of the classes they were confused with); ``mIoU_d2v06`` divides the same sum by the
    number of classes with ground-truth or predicted pixels. fwIoU weights IoU by ground-truth
    frequency.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf.sum(axis=0)
    present = gt_pixels > 0
    seen = present | (pred_pixels > 0)
    union = gt_pixels + pred_pixels - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    acc = np.divide(tp, gt_pixels, out=np.zeros_like(tp), where=present)
    total = gt_pixels.sum()
    results = {
        "mIoU": 100.0 * float(iou[present].mean()) if present.any() else 0.0,
        "mIoU_d2v06": 100.0 * float(iou[present].sum() / seen.sum()) if present.any() else 0.0,
        "fwIoU": 100.0 * float((iou * gt_pixels).sum() / total) if total else 0.0,
        "mACC": 100.0 * float(acc[present].mean()) if present.any() else 0.0,
        "pACC": 100.0 * float(tp.sum() / total) if total else 0.0,
    }
    if class_names is not None:
        for k, name in enumerate(class_names):
            if present[k]:
                results[f"IoU-{name}"] = 100.0 * float(iou[k])
    return results


def read_label_image(path: str) -> np.ndarray:
    """A label PNG/TIFF (uint8 or uint16) as int64 [H, W]."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


class SemSegEvaluator(DatasetEvaluator):
    """Scores ``outputs[i]["sem_seg"]`` (float [K, H, W] at the original size) by argmax.

    Ground truth is read from ``inputs[i]["sem_seg_file_name"]`` (or ``inputs[i]["sem_seg"]`` when
    the loader already holds it at the original size).
    """

    def __init__(self, *, class_names: list[str], ignore_label: int, output_dir: str | None = None,
                 dataset_name: str = ""):
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_label = int(ignore_label)
        self.output_dir = output_dir
        self.dataset_name = dataset_name
        self.reset()

    def reset(self) -> None:
        self._conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            pred = out["sem_seg"].argmax(dim=0).to("cpu").numpy()
            if "sem_seg_file_name" in inp:
                gt = read_label_image(inp["sem_seg_file_name"])
            else:
                gt = torch.as_tensor(inp["sem_seg"]).to("cpu").numpy()
            if gt.shape != pred.shape:
                raise ValueError(f"{inp.get('file_name', '?')}: prediction {pred.shape} and ground truth "
                                 f"{gt.shape} differ; outputs must be at the original (height, width)")
            self._conf += confusion_matrix(pred, gt, self.num_classes, self.ignore_label)

    def evaluate(self) -> dict[str, dict[str, float]]:
        parts = gather_on_main([self._conf])
        if parts is None:
            return {}
        results = segmentation_metrics(sum(parts), self.class_names)
        write_results(self.output_dir, "sem_seg_evaluation.json",
                      {"dataset": self.dataset_name, "sem_seg": results})
        return {"sem_seg": results}
