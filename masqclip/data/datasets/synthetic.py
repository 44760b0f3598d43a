"""The synthetic world's dataset names (the embedded default), read from the real formats.

| name                                   | role                      | annotated                      |
|----------------------------------------|---------------------------|--------------------------------|
| synthetic_instance_train_base          | COCO base48 training      | base things (novel ones appear)|
| synthetic_instance_val_{base,novel,all}| base48/novel17/instances65| that split's things            |
| synthetic_panoptic_train               | COCO panoptic training    | all things and world-A stuff   |
| synthetic_cross_panoptic_val           | ADE20K-150 (panoptic)     | things and world-B stuff       |
| synthetic_cross_sem_seg_val            | ADE20K-150 (semantic)     | things and world-B stuff       |

Files live under ``$DETECTRON2_DATASETS/synthetic`` (see ``masqclip.data.synthetic.world``); the
category table is the package's own, so metadata is available before the world is generated.
"""
from __future__ import annotations

from ..synthetic import categories as C
from ..synthetic.world import IGNORE_LABEL
from .common import datasets_root, register_dataset, require
from .formats import load_coco_instances, load_coco_panoptic, load_sem_seg

ROOT = "synthetic"
PREPARE = "masqclip prepare synthetic --output {root}"
INSTANCE_SPLITS = {  # dataset name -> (annotation file stem, image split, thing group)
    "synthetic_instance_train_base": ("train_base", "train", "base"),
    "synthetic_instance_val_base": ("val_base", "val", "base"),
    "synthetic_instance_val_novel": ("val_novel", "val", "novel"),
    "synthetic_instance_val_all": ("val_all", "val", "all"),
}
PANOPTIC_SPLITS = {  # dataset name -> (image split, world, evaluator type)
    "synthetic_panoptic_train": ("train", "a", "coco_panoptic_seg"),
    "synthetic_cross_panoptic_val": ("cross_val", "b", "ade20k_panoptic_seg"),
}
SEM_SEG_SPLITS = {"synthetic_cross_sem_seg_val": ("cross_val", "b")}


def _paths(split: str) -> dict[str, str]:
    """Paths relative to the datasets root (resolved when used, as the other datasets do)."""
    return {"image_root": f"{ROOT}/images/{split}", "panoptic_root": f"{ROOT}/panoptic_{split}",
            "panoptic_json": f"{ROOT}/annotations/panoptic_{split}.json", "sem_seg_root": f"{ROOT}/semantic_{split}"}


def _require(name: str, *relative: str) -> None:
    root = datasets_root()
    require(name, [root / p for p in relative], PREPARE.format(root=root))


def _instance_loader(name: str, json_rel: str, image_rel: str, id_map: dict[int, int]):
    def load() -> list[dict]:
        _require(name, json_rel, image_rel)
        return load_coco_instances(datasets_root() / json_rel, datasets_root() / image_rel, id_map)

    return load


def _panoptic_loader(name: str, paths: dict[str, str], id_map: dict[int, int], thing_ids: set[int]):
    def load() -> list[dict]:
        _require(name, *paths.values())
        root = datasets_root()
        return load_coco_panoptic(root / paths["panoptic_json"], root / paths["image_root"],
                                  root / paths["panoptic_root"], id_map, thing_ids,
                                  sem_seg_root=root / paths["sem_seg_root"])

    return load


def _sem_seg_loader(name: str, paths: dict[str, str]):
    def load() -> list[dict]:
        _require(name, paths["image_root"], paths["sem_seg_root"])
        root = datasets_root()
        return load_sem_seg(root / paths["image_root"], root / paths["sem_seg_root"], image_ext="png", gt_ext="png")

    return load


def _world_metadata(world: str) -> dict:
    cats = C.world_categories(world)
    return {
        "thing_classes": [c.name for c in cats if c.isthing],
        "stuff_classes": [c.name for c in cats],
        "thing_dataset_id_to_contiguous_id": {c.id: i for i, c in enumerate(cats) if c.isthing},
        "stuff_dataset_id_to_contiguous_id": {c.id: i for i, c in enumerate(cats) if not c.isthing},
        "ignore_label": IGNORE_LABEL,
    }


def register_synthetic() -> None:
    """Register every synthetic dataset name (no file is read until a loader runs)."""
    ov_ids = {"base_dataset_ids": [c.id for c in C.things("base")],
              "novel_dataset_ids": [c.id for c in C.things("novel")]}
    for name, (stem, split, group) in INSTANCE_SPLITS.items():
        cats = C.things(group)
        id_map = {c.id: i for i, c in enumerate(cats)}
        json_rel = f"{ROOT}/annotations/instances_{stem}.json"
        register_dataset(
            name, _instance_loader(name, json_rel, _paths(split)["image_root"], id_map),
            thing_classes=[c.name for c in cats], stuff_classes=[c.name for c in cats],
            thing_dataset_id_to_contiguous_id=id_map, evaluator_type="coco", ignore_label=IGNORE_LABEL,
            json_file=json_rel, image_root=_paths(split)["image_root"], **ov_ids,
        )
    for name, (split, world, evaluator) in PANOPTIC_SPLITS.items():
        meta = _world_metadata(world)
        id_map = {**meta["thing_dataset_id_to_contiguous_id"], **meta["stuff_dataset_id_to_contiguous_id"]}
        register_dataset(name, _panoptic_loader(name, _paths(split), id_map,
                                                set(meta["thing_dataset_id_to_contiguous_id"])),
                         evaluator_type=evaluator, **meta, **_paths(split), **ov_ids)
    for name, (split, world) in SEM_SEG_SPLITS.items():
        paths = _paths(split)
        register_dataset(name, _sem_seg_loader(name, paths), evaluator_type="sem_seg",
                         image_root=paths["image_root"], sem_seg_root=paths["sem_seg_root"],
                         **_world_metadata(world), **ov_ids)
