"""ADE20K: the 150-class SceneParsing benchmark (panoptic + semantic) and ADE20K-Full (847 classes).

Layout under ``$DETECTRON2_DATASETS`` (Mask2Former's)::

    ADEChallengeData2016/images/validation/*.jpg, annotations/validation/*.png, objectInfo150.txt
    ADEChallengeData2016/annotations_instance/validation/*.png     instance release (panoptic input)
    ADEChallengeData2016/annotations_detectron2/validation/*.png   <- masqclip prepare ade20k-150
    ADEChallengeData2016/ade20k_panoptic_val{.json,/}              <- masqclip prepare ade20k-150
    ADE20K_2021_17_01/index_ade20k.pkl + images/ADE/...            full release
    ADE20K_2021_17_01/{images,annotations}_detectron2/validation/, categories_847.json
                                                                   <- masqclip prepare ade20k-847

Class names: the semantic benchmark's from the release's ``objectInfo150.txt``; the panoptic
set's from the prepared JSON, which holds the official ADE20K-150 panoptic table
(``masqclip/data/categories/ade20k_150_panoptic.json``); ADE20K-847's from ``categories_847.json``,
written by the preparation from the official 847-class table (``categories/ade20k_847.json``).
"""
from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

from .common import datasets_root, register_dataset, require, require_nonempty_dir
from .formats import load_coco_panoptic, load_sem_seg, read_json

ADE_ROOT = "ADEChallengeData2016"
ADE_FULL_ROOT = "ADE20K_2021_17_01"
ADE_DOWNLOAD = ("download ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu/ and unzip it "
                "into {root}")
ADE_FULL_DOWNLOAD = ("download the ADE20K full release (ADE20K_2021_17_01.zip, registration at "
                     "https://groups.csail.mit.edu/vision/datasets/ADE20K/) and unzip it into {root}")
FULL_IGNORE_LABEL = 65535  # uint16 label images: more classes than uint8 holds
CATEGORIES_DIR = Path(__file__).resolve().parents[1] / "categories"


@lru_cache(maxsize=None)
def _category_table(file: str) -> tuple:
    with open(CATEGORIES_DIR / file, encoding="utf-8") as fh:
        return tuple(json.load(fh)["categories"])


def ade150_panoptic_table() -> list[dict]:
    """The official ADE20K-150 panoptic categories ``[{"id", "name", "isthing", "color"}]`` (id 0..149)."""
    return [dict(c) for c in _category_table("ade20k_150_panoptic.json")]


def ade847_table() -> list[dict]:
    """The official ADE20K-847 classes ``[{"id": class-map value, "name"}]`` in label order (0..846)."""
    return [dict(c) for c in _category_table("ade20k_847.json")]


def read_object_info(path: Path) -> list[str]:
    """Class names of the SceneParsing release's ``objectInfo150`` table, in label order (1..150).

    Accepts the tab-separated ``objectInfo150.txt`` of ADEChallengeData2016 (columns Idx, Ratio,
    Train, Val, Name) and the ``objectInfo150.csv`` of the sceneparsing toolkit (synonyms separated
    by ";"). Returns names in the metadata convention ``"name, synonym"``.
    """
    text = Path(path).read_text(encoding="utf-8").splitlines()
    rows = [r for r in (csv.reader(text, delimiter="\t" if "\t" in text[0] else ",")) if r]
    header, rows = [h.strip().lower() for h in rows[0]], rows[1:]
    col = header.index("name") if "name" in header else len(header) - 1
    rows.sort(key=lambda r: int(r[0]))
    names = [", ".join(s.strip() for s in r[col].replace(";", ",").split(",") if s.strip()) for r in rows]
    if [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{path}: class indices are not 1..{len(rows)}")
    return names


def _ade_paths() -> dict[str, Path]:
    root = datasets_root() / ADE_ROOT
    return {
        "root": root,
        "images": root / "images/validation",
        "object_info": root / "objectInfo150.txt",
        "sem_seg": root / "annotations_detectron2/validation",
        "panoptic_json": root / "ade20k_panoptic_val.json",
        "panoptic_root": root / "ade20k_panoptic_val",
    }


def _require_release(name: str, p: dict[str, Path]) -> None:
    require(name, [p["images"], p["object_info"]], ADE_DOWNLOAD.format(root=datasets_root()))


def _ade150_names(name: str) -> dict:
    p = _ade_paths()
    _require_release(name, p)
    return {"stuff_classes": read_object_info(p["object_info"])}


def _ade150_panoptic_meta(name: str) -> dict:
    p = _ade_paths()
    require(name, [p["panoptic_json"]], "masqclip prepare ade20k-150")
    cats = read_json(p["panoptic_json"])["categories"]
    return {
        "stuff_classes": [c["name"] for c in cats],
        "thing_classes": [c["name"] for c in cats if c["isthing"]],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats) if not c["isthing"]},
    }


def _load_ade150_sem_seg(name: str) -> list[dict]:
    p = _ade_paths()
    _require_release(name, p)
    require_nonempty_dir(name, p["sem_seg"], "*.png", "masqclip prepare ade20k-150")
    return load_sem_seg(p["images"], p["sem_seg"], image_ext="jpg", gt_ext="png")


def _load_ade150_panoptic(name: str) -> list[dict]:
    p = _ade_paths()
    _require_release(name, p)
    require(name, [p["panoptic_json"], p["panoptic_root"], p["sem_seg"]], "masqclip prepare ade20k-150")
    meta = _ade150_panoptic_meta(name)
    id_map = {**meta["thing_dataset_id_to_contiguous_id"], **meta["stuff_dataset_id_to_contiguous_id"]}
    return load_coco_panoptic(p["panoptic_json"], p["images"], p["panoptic_root"], id_map,
                              set(meta["thing_dataset_id_to_contiguous_id"]), sem_seg_root=p["sem_seg"])


def _full_paths() -> dict[str, Path]:
    root = datasets_root() / ADE_FULL_ROOT
    return {"images": root / "images_detectron2/validation",
            "sem_seg": root / "annotations_detectron2/validation",
            "categories": root / "categories_847.json"}


def _ade847_names(name: str) -> dict:
    p = _full_paths()
    require(name, [p["categories"]], "masqclip prepare ade20k-847")
    return {"stuff_classes": [c["name"] for c in read_json(p["categories"])]}


def _load_ade847(name: str) -> list[dict]:
    p = _full_paths()
    require(name, [p["images"], p["categories"]], "masqclip prepare ade20k-847")
    require_nonempty_dir(name, p["sem_seg"], "*.tif", "masqclip prepare ade20k-847")
    return load_sem_seg(p["images"], p["sem_seg"], image_ext="jpg", gt_ext="tif")


def register_ade20k() -> None:
    """Register ``ade20k_panoptic_val``, ``ade20k_sem_seg_val`` and ``ade20k_full_sem_seg_val``."""
    name = "ade20k_panoptic_val"
    register_dataset(
        name, lambda: _load_ade150_panoptic("ade20k_panoptic_val"),
        lazy=(("stuff_classes", "thing_classes", "thing_dataset_id_to_contiguous_id",
               "stuff_dataset_id_to_contiguous_id"), lambda: _ade150_panoptic_meta("ade20k_panoptic_val")),
        evaluator_type="ade20k_panoptic_seg", ignore_label=255,
        image_root=f"{ADE_ROOT}/images/validation", panoptic_root=f"{ADE_ROOT}/ade20k_panoptic_val",
        panoptic_json=f"{ADE_ROOT}/ade20k_panoptic_val.json",
        sem_seg_root=f"{ADE_ROOT}/annotations_detectron2/validation",
    )
    register_dataset(
        "ade20k_sem_seg_val", lambda: _load_ade150_sem_seg("ade20k_sem_seg_val"),
        lazy=(("stuff_classes",), lambda: _ade150_names("ade20k_sem_seg_val")),
        evaluator_type="sem_seg", ignore_label=255,
        image_root=f"{ADE_ROOT}/images/validation", sem_seg_root=f"{ADE_ROOT}/annotations_detectron2/validation",
    )
    register_dataset(
        "ade20k_full_sem_seg_val", lambda: _load_ade847("ade20k_full_sem_seg_val"),
        lazy=(("stuff_classes",), lambda: _ade847_names("ade20k_full_sem_seg_val")),
        evaluator_type="sem_seg", ignore_label=FULL_IGNORE_LABEL,
        image_root=f"{ADE_FULL_ROOT}/images_detectron2/validation",
        sem_seg_root=f"{ADE_FULL_ROOT}/annotations_detectron2/validation",
    )
