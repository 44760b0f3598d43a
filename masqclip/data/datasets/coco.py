"""COCO: the open-vocabulary instance split (base48 / novel17 / instances65) and COCO panoptic.

Layout under ``$DETECTRON2_DATASETS`` (as the official MasQCLIP / Mask2Former code expects)::

    coco/{train,val}2017/                                  images
    coco/annotations/instances_{train,val}2017.json        COCO release
    coco/annotations/ov_split_48_17/instances_{train,val}2017_{seen48,unseen17,instances65}.json
                                                           <- masqclip prepare coco-ovsplit
    coco/annotations/panoptic_{train,val}2017.json, coco/panoptic_{train,val}2017/   COCO release
    coco/panoptic_semseg_{train,val}2017/                  <- masqclip prepare coco-panoptic-semseg
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .common import datasets_root, register_dataset, require
from .formats import load_coco_instances, load_coco_panoptic, read_json

CATEGORIES_DIR = Path(__file__).resolve().parents[1] / "categories"
OV_SPLITS = ("base48", "novel17", "instances65")
COCO_DOWNLOAD = "download {what} from https://cocodataset.org/#download and unpack it into {where}"


@lru_cache(maxsize=None)
def _table(name: str) -> dict:
    with open(CATEGORIES_DIR / name, encoding="utf-8") as fh:
        return json.load(fh)


def ovsplit_categories(split: str) -> list[dict]:
    """``[{"id", "name"}]`` of ``split`` (base48 | novel17 | instances65) in COCO id order."""
    table = _table("coco_ovsplit.json")
    cats = table["base48"] + table["novel17"] if split == "instances65" else table[split]
    return sorted(cats, key=lambda c: c["id"])


def ovsplit_json(phase: str, split: str) -> str:
    """Path of a split file relative to the datasets root (the official file names)."""
    tag = _table("coco_ovsplit.json")["files"][split]
    return f"coco/annotations/ov_split_48_17/instances_{phase}2017_{tag}.json"


def panoptic_categories() -> list[dict]:
    """The 133 COCO-panoptic categories ``[{"id", "name", "isthing"}]`` in contiguous order."""
    return list(_table("coco_panoptic.json")["categories"])


def text_name(coco_name: str) -> str:
    """The vocabulary name (with synonyms) the text encoder gets for a COCO-panoptic name."""
    return _table("coco_panoptic_names.json")["names"].get(coco_name, coco_name)


def _ovsplit_loader(name: str, phase: str, split: str):
    def load() -> list[dict]:
        root = datasets_root()
        json_file, image_root = root / ovsplit_json(phase, split), root / f"coco/{phase}2017"
        require(name, [json_file], "masqclip prepare coco-ovsplit  (needs coco/annotations/"
                f"instances_{phase}2017.json: " + COCO_DOWNLOAD.format(what="the 2017 annotations",
                                                                    where=root / "coco") + ")")
        require(name, [image_root], COCO_DOWNLOAD.format(what=f"{phase}2017 images", where=root / "coco"))
        id_map = {c["id"]: i for i, c in enumerate(ovsplit_categories(split))}
        return load_coco_instances(json_file, image_root, id_map)

    return load


def _panoptic_loader(name: str, phase: str):
    def load() -> list[dict]:
        root = datasets_root()
        pan_json = root / f"coco/annotations/panoptic_{phase}2017.json"
        pan_root, image_root = root / f"coco/panoptic_{phase}2017", root / f"coco/{phase}2017"
        sem_root = root / f"coco/panoptic_semseg_{phase}2017"
        require(name, [pan_json, pan_root, image_root], COCO_DOWNLOAD.format(
            what=f"{phase}2017 images and the 2017 panoptic annotations (unzip panoptic_{phase}2017.zip too)",
            where=root / "coco"))
        require(name, [sem_root], "masqclip prepare coco-panoptic-semseg")
        cats = panoptic_categories()
        release = {c["id"]: c["name"] for c in read_json(pan_json)["categories"]}
        ours = {c["id"]: c["name"] for c in cats}
        if release != ours:
            raise ValueError(f"{pan_json}: categories differ from COCO panoptic 2017's 133 "
                             f"(first difference: {sorted(set(release.items()) ^ set(ours.items()))[:3]})")
        id_map = {c["id"]: i for i, c in enumerate(cats)}
        thing_ids = {c["id"] for c in cats if c["isthing"]}
        return load_coco_panoptic(pan_json, image_root, pan_root, id_map, thing_ids, sem_seg_root=sem_root)

    return load


def register_coco() -> None:
    """Register ``coco_instance_{train,val}_{base48,novel17,instances65}`` and
    ``coco_2017_{train,val}_panoptic`` (nothing is read until a loader runs)."""
    base_ids = [c["id"] for c in ovsplit_categories("base48")]
    novel_ids = [c["id"] for c in ovsplit_categories("novel17")]
    for phase in ("train", "val"):
        for split in OV_SPLITS:
            name = f"coco_instance_{phase}_{split}"
            cats = ovsplit_categories(split)
            register_dataset(
                name, _ovsplit_loader(name, phase, split),
                thing_classes=[c["name"] for c in cats],
                thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats)},
                base_dataset_ids=base_ids, novel_dataset_ids=novel_ids,
                evaluator_type="coco", ignore_label=255,
                json_file=ovsplit_json(phase, split), image_root=f"coco/{phase}2017",
            )
        cats = panoptic_categories()
        name = f"coco_2017_{phase}_panoptic"
        register_dataset(
            name, _panoptic_loader(name, phase),
            thing_classes=[text_name(c["name"]) for c in cats if c["isthing"]],
            stuff_classes=[text_name(c["name"]) for c in cats],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
            stuff_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats) if not c["isthing"]},
            evaluator_type="coco_panoptic_seg", ignore_label=255,
            image_root=f"coco/{phase}2017", panoptic_root=f"coco/panoptic_{phase}2017",
            panoptic_json=f"coco/annotations/panoptic_{phase}2017.json",
            sem_seg_root=f"coco/panoptic_semseg_{phase}2017",
        )
