"""Panoptic segmentation: PQ / SQ / RQ (overall, things, stuff) with panopticapi.

Predictions are written as COCO-panoptic PNG + JSON into a temporary folder and scored against
the dataset's ``panoptic_json`` / ``panoptic_root`` with panopticapi's own matching code.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from panopticapi.evaluation import PQStat, pq_compute_single_core
from panopticapi.utils import id2rgb
from PIL import Image

from ..data.catalog import MetadataCatalog
from ..data.datasets.common import resolve_path
from .evaluator import DatasetEvaluator, gather_on_main, write_results
from .masks import contiguous_to_dataset_ids

logger = logging.getLogger(__name__)


def pq_from_files(gt_json: dict, gt_folder: str, pred_annotations: list[dict], pred_folder: str) -> dict:
    """panopticapi's PQ statistics of ``pred_annotations`` (COCO-panoptic annotation dicts whose
    PNGs are in ``pred_folder``) on the ground-truth images they cover.

    Returns:
        ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}}`` in 0-1, as ``panopticapi.pq_compute``.
    """
    categories = {c["id"]: c for c in gt_json["categories"]}
    by_image = {a["image_id"]: a for a in pred_annotations}
    pairs = [(gt, by_image[gt["image_id"]]) for gt in gt_json["annotations"] if gt["image_id"] in by_image]
    missing = set(by_image) - {gt["image_id"] for gt, _ in pairs}
    if missing:
        raise KeyError(f"no panoptic ground truth for image ids {sorted(missing, key=str)[:5]}")
    with contextlib.redirect_stdout(io.StringIO()):
        stat: PQStat = pq_compute_single_core(0, pairs, gt_folder, pred_folder, categories)
    return {name: stat.pq_average(categories, isthing=isthing)[0]
            for name, isthing in (("All", None), ("Things", True), ("Stuff", False))}


class PanopticEvaluator(DatasetEvaluator):
    """Scores ``outputs[i]["panoptic_seg"] = (int [H, W] segment ids, segments_info)``.

    Reports ``PQ``, ``SQ``, ``RQ`` and their ``_th`` (things) and ``_st`` (stuff) versions, in %.
    """

    def __init__(self, *, dataset_name: str, output_dir: str | None = None):
        self.dataset_name = dataset_name
        self.metadata = MetadataCatalog.get(dataset_name)
        self.output_dir = output_dir
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        to_dataset = contiguous_to_dataset_ids(self.metadata)
        for inp, out in zip(inputs, outputs):
            seg, segments = out["panoptic_seg"]
            seg = seg.to("cpu").numpy().astype(np.int64) if hasattr(seg, "numpy") else np.asarray(seg, np.int64)
            listed = {int(s["id"]) for s in segments}
            seg = np.where(np.isin(seg, list(listed)), seg, 0)  # unlisted ids are void
            buf = io.BytesIO()
            Image.fromarray(id2rgb(seg)).save(buf, format="PNG")
            self._predictions.append({
                "image_id": inp["image_id"],
                "file_name": Path(inp["file_name"]).stem + ".png",
                "png": buf.getvalue(),
                "segments_info": [{"id": int(s["id"]), "category_id": to_dataset.get(int(s["category_id"]),
                                                                                    int(s["category_id"]))}
                                  for s in segments],
            })

    def evaluate(self) -> dict[str, dict[str, float]]:
        predictions = gather_on_main(self._predictions)
        if predictions is None:
            return {}
        gt_json_path = resolve_path(self.metadata.panoptic_json)
        gt_folder = resolve_path(self.metadata.panoptic_root)
        with open(gt_json_path, encoding="utf-8") as fh:
            gt_json = json.load(fh)
        with tempfile.TemporaryDirectory(prefix="panoptic_eval_") as pred_folder:
            annotations = []
            for p in predictions:
                (Path(pred_folder) / p["file_name"]).write_bytes(p["png"])
                annotations.append({k: p[k] for k in ("image_id", "file_name", "segments_info")})
            write_results(self.output_dir, "panoptic_predictions.json", {"annotations": annotations})
            stats = pq_from_files(gt_json, str(gt_folder), annotations, pred_folder)  # edits annotations
        results = {}
        for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for metric in ("pq", "sq", "rq"):
                results[metric.upper() + suffix] = 100.0 * float(stats[name][metric])
        logger.info("%s panoptic (%d images): PQ %.2f (things %.2f, stuff %.2f)", self.dataset_name,
                    len(predictions), results["PQ"], results["PQ_th"], results["PQ_st"])
        write_results(self.output_dir, "panoptic_evaluation.json",
                      {"dataset": self.dataset_name, "panoptic_seg": results})
        return {"panoptic_seg": results}
