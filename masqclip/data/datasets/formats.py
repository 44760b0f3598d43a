"""Readers of the standard on-disk formats into detectron2-style per-image records.

Shared by every dataset module (real and synthetic): COCO instance JSON, COCO-panoptic PNG + JSON,
and folders of semantic label images.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from PIL import Image

# detectron2's BoxMode.XYWH_ABS, the mode of COCO's "bbox" field.
BOX_MODE_XYWH_ABS = 1


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_coco_instances(json_file: Path, image_root: Path, id_map: dict[int, int]) -> list[dict]:
    """COCO instance JSON -> records with ``annotations``.

    Args:
        json_file: ``instances_*.json`` (polygon or RLE segmentations).
        image_root: folder of the images named by the JSON's ``file_name``.
        id_map: dataset category id -> contiguous id; an annotation of another category is an error.

    Returns:
        one record per image of the JSON: ``file_name``, ``image_id``, ``height``, ``width`` and
        ``annotations`` (``segmentation``, ``bbox``, ``bbox_mode``, ``category_id`` (contiguous),
        ``dataset_category_id``, ``iscrowd``).
    """
    data = read_json(json_file)
    per_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data.get("annotations", []):
        cat = int(ann["category_id"])
        if cat not in id_map:
            raise ValueError(f"{json_file}: annotation {ann.get('id')} has category {cat}, "
                             f"not one of this dataset's {len(id_map)} categories")
        per_image[ann["image_id"]].append({
            "segmentation": ann["segmentation"],
            "bbox": [float(v) for v in ann.get("bbox", [0, 0, 0, 0])],
            "bbox_mode": BOX_MODE_XYWH_ABS,
            "category_id": id_map[cat],
            "dataset_category_id": cat,
            "iscrowd": int(ann.get("iscrowd", 0)),
        })
    return [
        {
            "file_name": str(Path(image_root) / img["file_name"]),
            "image_id": img["id"],
            "height": int(img["height"]),
            "width": int(img["width"]),
            "annotations": per_image.get(img["id"], []),
        }
        for img in data["images"]
    ]


def load_coco_panoptic(panoptic_json: Path, image_root: Path, panoptic_root: Path,
                       id_map: dict[int, int], thing_ids: set[int],
                       sem_seg_root: Path | None = None) -> list[dict]:
    """COCO-panoptic JSON + PNG folder -> records with ``pan_seg_file_name`` and ``segments_info``.

    Args:
        panoptic_json: the JSON with ``images``, ``annotations`` (``segments_info``), ``categories``.
        image_root: folder of the images; panoptic_root: folder of the RGB-encoded segment PNGs.
        id_map: dataset category id -> contiguous id (all categories).
        thing_ids: dataset ids of thing categories.
        sem_seg_root: optional folder of semantic PNGs named like the panoptic PNGs.

    Returns:
        records with ``file_name``, ``image_id``, ``height``, ``width``, ``pan_seg_file_name``,
        ``segments_info`` (``id``, ``category_id`` contiguous, ``isthing``, ``iscrowd``, ``area``)
        and, with ``sem_seg_root``, ``sem_seg_file_name``.
    """
    data = read_json(panoptic_json)
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        segments = [{
            "id": int(s["id"]),
            "category_id": id_map[int(s["category_id"])],
            "isthing": int(s["category_id"]) in thing_ids,
            "iscrowd": int(s.get("iscrowd", 0)),
            "area": int(s.get("area", 0)),
        } for s in ann["segments_info"]]
        record = {
            "file_name": str(Path(image_root) / img["file_name"]),
            "image_id": ann["image_id"],
            "height": int(img["height"]),
            "width": int(img["width"]),
            "pan_seg_file_name": str(Path(panoptic_root) / ann["file_name"]),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = str(Path(sem_seg_root) / ann["file_name"])
        records.append(record)
    return records


def load_sem_seg(image_root: Path, gt_root: Path, *, image_ext: str, gt_ext: str,
                 stems: Sequence[str] | None = None) -> list[dict]:
    """Pairs ``image_root/<stem>.<image_ext>`` with ``gt_root/<stem>.<gt_ext>``.

    Args:
        stems: the images to take (e.g. from a split list); default every label file in ``gt_root``.

    Returns:
        records with ``file_name``, ``image_id`` (the stem), ``height``, ``width`` (read from the
        image header) and ``sem_seg_file_name``.
    """
    if stems is None:
        stems = sorted(p.name[: -len(gt_ext) - 1] for p in Path(gt_root).glob(f"*.{gt_ext}"))
    records = []
    for stem in stems:
        image = Path(image_root) / f"{stem}.{image_ext}"
        with Image.open(image) as im:
            width, height = im.size
        records.append({
            "file_name": str(image),
            "image_id": stem,
            "height": height,
            "width": width,
            "sem_seg_file_name": str(Path(gt_root) / f"{stem}.{gt_ext}"),
        })
    return records
