"""Generate the synthetic world on disk, in the formats of the real datasets.

Layout under ``<root>/synthetic/`` (``root`` = ``$DETECTRON2_DATASETS``, default ``./datasets``)::

    images/{train,val,cross_val}/NNNNNN.png           RGB images
    annotations/instances_train_base.json            COCO instances (RLE), base things only
    annotations/instances_val_{base,novel,all}.json  COCO instances of that split's things
    annotations/panoptic_{train,cross_val}.json      COCO panoptic (segments_info)
    panoptic_{train,cross_val}/NNNNNN.png            panoptic PNGs (panopticapi id2rgb)
    semantic_{train,cross_val}/NNNNNN.png            uint8 contiguous ids, 255 = ignore
    clip_crops/{train,val}.jsonl + crop PNGs         captioned crops of every category
    world.json                                       categories, splits and parameters

Every image and crop draws from its own generator seeded by (seed, stream, index), so output is
identical whatever the number of worker processes.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from panopticapi.utils import id2rgb
from pycocotools import mask as mask_utils

from . import categories as C
from .draw import hsv_color
from .scene import STYLES, Scene, SceneParams, render_crop, render_scene

WORLD_VERSION = 2
IGNORE_LABEL = 255
SEGMENT_ID_STRIDE = 1000  # panoptic segment id = category id * stride + instance number
# zlib levels: photos (images, crops) stored (level 0: the same pixels as level 1, files ~30%
# larger, written about twice and read faster); label maps, mostly flat, compress cheaply (level 1)
PNG_COMPRESSION = 0
LABEL_PNG_COMPRESSION = 1

# image split -> (world, random stream, per-image outputs)
SPLITS = {
    "train": ("a", 0, ("instances", "panoptic")),
    "val": ("a", 1, ("instances",)),
    "cross_val": ("b", 2, ("panoptic",)),
}
# instance annotation files: name -> (image split, thing group annotated)
INSTANCE_FILES = {
    "train_base": ("train", "base"),
    "val_base": ("val", "base"),
    "val_novel": ("val", "novel"),
    "val_all": ("val", "all"),
}
CROP_STREAMS = {"train": 3, "val": 4}
# caption templates: {name} = a synonym of the category, {an_name} = it with "a"/"an"
THING_CAPTIONS = ("a photo of {an_name}.", "{an_name}.", "a picture of the {name}.", "a close-up photo of {an_name}.",
                  "there is {an_name} in the picture.", "the {name} in the scene.", "{name}")
STUFF_CAPTIONS = ("a photo of {name}.", "a patch of {name}.", "a texture of {name}.", "{name} in the background.",
                  "a close-up of {name}.", "{name}")


@dataclass(frozen=True)
class WorldConfig:
    """Arguments of ``masqclip prepare synthetic`` (see ``prepare/synthetic.py``)."""

    num_train: int = 400
    num_val: int = 48
    seed: int = 0
    crop_size: int = 64
    crops_train: int = 200  # per category
    crops_val: int = 30  # per category
    scene: SceneParams = field(default_factory=SceneParams)


def contiguous_ids(world: str) -> dict[int, int]:
    """Dataset id -> contiguous id for all categories of ``world`` (the semantic PNG values)."""
    return {c.id: i for i, c in enumerate(C.world_categories(world))}


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _save_png(array: np.ndarray, path: Path, *, label: bool = False) -> None:
    Image.fromarray(array).save(path, compress_level=LABEL_PNG_COMPRESSION if label else PNG_COMPRESSION)


def _mask_annotation(cat_id: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"category_id": cat_id, "segmentation": {"size": [int(s) for s in rle["size"]],
                                                    "counts": rle["counts"].decode("ascii")},
            "area": int(mask_utils.area(rle)), "bbox": [float(b) for b in mask_utils.toBbox(rle)], "iscrowd": 0}


def panoptic_targets(scene: Scene, world: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The panoptic and semantic ground truth of a scene.

    Returns:
        segment ids int64 [H, W] (``category id * SEGMENT_ID_STRIDE`` for stuff, ``+ k + 1`` for the
        k-th thing), semantic labels uint8 [H, W] (contiguous ids of ``world``), and the
        ``segments_info`` of the segments left visible.
    """
    segments = [(int(s) * SEGMENT_ID_STRIDE, int(s), scene.stuff == s) for s in np.unique(scene.stuff)]
    segments += [(cid * SEGMENT_ID_STRIDE + k + 1, cid, m) for k, (cid, m) in enumerate(scene.things)]
    ids = np.zeros(scene.stuff.shape, np.int64)
    for seg_id, _, m in segments:
        ids[m] = seg_id  # things come last, so they overwrite the stuff under them
    info = []
    for seg_id, cid, _ in segments:
        m = ids == seg_id
        if m.any():
            ann = _mask_annotation(cid, m)
            info.append({"id": seg_id, "category_id": cid, "iscrowd": 0, "area": ann["area"], "bbox": ann["bbox"]})
    lut = np.full(max(C.BY_ID) + 1, IGNORE_LABEL, np.uint8)
    for dataset_id, contiguous in contiguous_ids(world).items():
        lut[dataset_id] = contiguous
    return ids, lut[scene.category_map()], info


def _render_image(task: tuple[Path, WorldConfig, str, int]) -> dict:
    """Render image ``index`` of ``split``, write its PNGs, return its annotations (JSON-ready)."""
    out, cfg, split, index = task
    world, stream, outputs = SPLITS[split]
    stuff = C.world_categories(world)[len(C.THINGS):]
    cover = split != "train"  # test sets draw each category first in turn, so all of them appear
    scene = render_scene(
        _rng(cfg.seed, stream, index), things=C.THINGS, stuff=stuff, style=STYLES[world], params=cfg.scene,
        must_things=(C.THINGS[index % len(C.THINGS)],) if cover else (),
        must_stuff=(stuff[index % len(stuff)],) if cover else (),
    )
    name = f"{index + 1:06d}.png"
    _save_png(scene.image, out / "images" / split / name)
    height, width = scene.image.shape[:2]
    record = {"image": {"id": index + 1, "file_name": name, "height": height, "width": width},
              "things": [_mask_annotation(cid, m) for cid, m in scene.things]}
    if "panoptic" in outputs:
        ids, sem, info = panoptic_targets(scene, world)
        _save_png(id2rgb(ids), out / f"panoptic_{split}" / name, label=True)
        _save_png(sem, out / f"semantic_{split}" / name, label=True)
        record["panoptic"] = {"image_id": index + 1, "file_name": name, "segments_info": info}
    return record


def _render_crop(task: tuple[Path, WorldConfig, str, int, int]) -> list[dict]:
    """Render the crops ``[start, stop)`` (global indices over categories x per-category count)."""
    out, cfg, split, start, stop = task
    per_cat = cfg.crops_train if split == "train" else cfg.crops_val
    lines = []
    for index in range(start, stop):
        cat = C.ALL_CATEGORIES[index // per_cat]
        rng = _rng(cfg.seed, CROP_STREAMS[split], index)
        image = render_crop(rng, cat, size=cfg.crop_size, backgrounds=C.STUFF_A + C.STUFF_B, params=cfg.scene)
        rel = f"{split}/{cat.id:02d}/{index % per_cat:05d}.png"
        _save_png(image, out / "clip_crops" / rel)
        synonyms = cat.name.split(", ")
        templates = THING_CAPTIONS if cat.isthing else STUFF_CAPTIONS
        name = synonyms[int(rng.integers(len(synonyms)))]
        article = "an" if name[0] in "aeiou" else "a"
        caption = templates[int(rng.integers(len(templates)))].format(name=name, an_name=f"{article} {name}")
        lines.append({"file": rel, "category": cat.name, "caption": caption})
    return lines


def _coco_categories(cats: tuple[C.Category, ...]) -> list[dict]:
    return [{"id": c.id, "name": c.name, "supercategory": "thing" if c.isthing else "stuff",
             "isthing": int(c.isthing), "color": [int(x) for x in np.rint(hsv_color(c.hue, c.sat, c.val))]} for c in cats]


def _write_json(obj, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, separators=(",", ":"))


def _write_annotations(out: Path, records: dict[str, list[dict]]) -> None:
    thing_groups = {g: {c.id for c in C.things(g)} for g in ("base", "novel", "all")}
    for name, (split, group) in INSTANCE_FILES.items():
        anns = []
        for rec in records[split]:
            for ann in rec["things"]:
                if ann["category_id"] in thing_groups[group]:
                    anns.append({"id": len(anns) + 1, "image_id": rec["image"]["id"], **ann})
        _write_json({"info": {"description": f"synthetic world, instances {name}"},
                     "images": [r["image"] for r in records[split]], "annotations": anns,
                     "categories": _coco_categories(C.things(group))}, out / "annotations" / f"instances_{name}.json")
    for split, (world, _, outputs) in SPLITS.items():
        if "panoptic" in outputs:
            _write_json({"info": {"description": f"synthetic world {world.upper()}, panoptic {split}"},
                         "images": [r["image"] for r in records[split]],
                         "annotations": [r["panoptic"] for r in records[split]],
                         "categories": _coco_categories(C.world_categories(world))},
                        out / "annotations" / f"panoptic_{split}.json")


def _split_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, total, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def generate_world(root: str | os.PathLike, cfg: WorldConfig = WorldConfig(), *, workers: int = 1) -> Path:
    """Write the synthetic world to ``<root>/synthetic`` (replacing an existing one).

    Args:
        root: the datasets root (``$DETECTRON2_DATASETS``).
        cfg: sizes, counts and seed.
        workers: processes used to render (output does not depend on it).
    Returns:
        the ``<root>/synthetic`` directory.
    """
    final = Path(root) / "synthetic"
    out = Path(root) / f".synthetic.tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "cross_val": cfg.num_val}
    for split, (_, _, outputs) in SPLITS.items():
        (out / "images" / split).mkdir(parents=True)
        for kind in ("panoptic", "semantic") if "panoptic" in outputs else ():
            (out / f"{kind}_{split}").mkdir()
    (out / "annotations").mkdir()
    for split in CROP_STREAMS:
        for cat in C.ALL_CATEGORIES:
            (out / "clip_crops" / split / f"{cat.id:02d}").mkdir(parents=True)

    image_tasks = [(out, cfg, split, i) for split in SPLITS for i in range(sizes[split])]
    crop_counts = {"train": cfg.crops_train, "val": cfg.crops_val}
    crop_tasks = [(out, cfg, split, a, b) for split, n in crop_counts.items()
                  for a, b in _split_ranges(n * len(C.ALL_CATEGORIES), max(1, workers) * 4)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rendered = list(pool.map(_render_image, image_tasks, chunksize=8))
            crop_lines = list(pool.map(_render_crop, crop_tasks))
    else:
        rendered = [_render_image(t) for t in image_tasks]
        crop_lines = [_render_crop(t) for t in crop_tasks]

    records = {split: [r for t, r in zip(image_tasks, rendered) if t[2] == split] for split in SPLITS}
    _write_annotations(out, records)
    for split in CROP_STREAMS:
        with open(out / "clip_crops" / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for task, lines in zip(crop_tasks, crop_lines):
                if task[2] == split:
                    fh.writelines(json.dumps(line) + "\n" for line in lines)
    world = {
        "version": WORLD_VERSION,
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "scene"}, "scene": cfg.scene.to_dict()},
        "categories": [c.to_dict() for c in C.ALL_CATEGORIES],
        "styles": {k: asdict(v) for k, v in STYLES.items()},
        "splits": {split: {"world": w, "num_images": sizes[split], "outputs": list(o)} for split, (w, _, o) in SPLITS.items()},
        "ignore_label": IGNORE_LABEL,
    }
    with open(out / "world.json", "w", encoding="utf-8") as fh:
        json.dump(world, fh, indent=1)
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    return final
