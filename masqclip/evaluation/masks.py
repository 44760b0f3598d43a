"""Mask <-> COCO RLE conversions shared by the instance and proposal evaluators."""
from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import torch


def encode_masks(masks: torch.Tensor | np.ndarray) -> list[dict]:
    """Binary masks bool [N, H, W] -> N compressed COCO RLEs (``counts`` as str, JSON-ready)."""
    if isinstance(masks, torch.Tensor):
        masks = masks.to("cpu").numpy()
    masks = np.asarray(masks).astype(np.uint8)
    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


_RLES_KEY = "_pred_mask_rles"  # where an output dict keeps its masks' encoding for the next evaluator


def prediction_rles(output: dict) -> list[dict]:
    """RLEs of ``output["instances"].pred_masks`` (binarised at 0.5 when float), one per mask in order.

    Encoded once per output and kept in the dict, so the evaluators scoring the same predictions
    (mask AP and proposal recall of an instance test set) share one encoding. The cache is tied
    to the mask tensor: an output whose masks were replaced is encoded afresh.
    """
    masks = output["instances"].pred_masks
    cached = output.get(_RLES_KEY)
    if cached is None or cached[0] is not masks:
        cpu = masks.to("cpu")
        cached = (masks, encode_masks(cpu > 0.5 if cpu.is_floating_point() else cpu))
        output[_RLES_KEY] = cached
    return cached[1]


def annotation_to_rle(segmentation, height: int, width: int) -> dict:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> one compressed RLE."""
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_util.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def contiguous_to_dataset_ids(metadata) -> dict[int, int]:
    """Contiguous class id -> dataset category id, from the metadata's thing/stuff id maps
    (identity when the metadata has none)."""
    mapping: dict[int, int] = {}
    for key in ("stuff_dataset_id_to_contiguous_id", "thing_dataset_id_to_contiguous_id"):
        for dataset_id, contiguous in (metadata.get(key) or {}).items():
            mapping[int(contiguous)] = int(dataset_id)
    return mapping
