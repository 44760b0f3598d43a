"""Pascal Context with 59 and 459 classes (semantic, validation split).

Layout under ``$DETECTRON2_DATASETS`` (the official MasQCLIP one), made by
``masqclip prepare pascal-context-59`` / ``pascal-context-459`` from the raw release::

    pascal_context_full/images/<id>.jpg, val.txt
    pascal_context_full/labels_59/<id>.png   (uint8, 255 = ignore),  categories_59.json
    pascal_context_full/labels_459/<id>.tif  (uint16, 65535 = ignore), categories_459.json

Class names come from the release's ``labels.txt`` / ``59_labels.txt`` (copied to the JSONs).
"""
from __future__ import annotations

from .common import datasets_root, register_dataset, require
from .formats import load_sem_seg, read_json

PASCAL_ROOT = "pascal_context_full"
# label image format per class count: (file extension, ignore label)
LABEL_FORMATS = {59: ("png", 255), 459: ("tif", 65535)}


def _paths(num_classes: int) -> dict:
    root = datasets_root() / PASCAL_ROOT
    return {"images": root / "images", "split": root / "val.txt", "labels": root / f"labels_{num_classes}",
            "categories": root / f"categories_{num_classes}.json"}


def _names(name: str, num_classes: int) -> dict:
    p = _paths(num_classes)
    require(name, [p["categories"]], f"masqclip prepare pascal-context-{num_classes}")
    return {"stuff_classes": [c["name"] for c in read_json(p["categories"])]}


def _load(name: str, num_classes: int) -> list[dict]:
    p = _paths(num_classes)
    require(name, list(p.values()), f"masqclip prepare pascal-context-{num_classes}")
    stems = [s.strip() for s in p["split"].read_text().splitlines() if s.strip()]
    ext = LABEL_FORMATS[num_classes][0]
    missing = [p["labels"] / f"{s}.{ext}" for s in stems if not (p["labels"] / f"{s}.{ext}").exists()]
    require(name, missing[:5], f"masqclip prepare pascal-context-{num_classes}")
    return load_sem_seg(p["images"], p["labels"], image_ext="jpg", gt_ext=ext, stems=stems)


def register_pascal_context() -> None:
    """Register ``pascal_context_59_sem_seg_val`` and ``pascal_context_459_sem_seg_val``."""
    for n, (ext, ignore) in LABEL_FORMATS.items():
        name = f"pascal_context_{n}_sem_seg_val"
        register_dataset(
            name, lambda name=name, n=n: _load(name, n),
            lazy=(("stuff_classes",), lambda name=name, n=n: _names(name, n)),
            evaluator_type="sem_seg", ignore_label=ignore,
            image_root=f"{PASCAL_ROOT}/images", sem_seg_root=f"{PASCAL_ROOT}/labels_{n}",
        )
