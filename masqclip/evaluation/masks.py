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
