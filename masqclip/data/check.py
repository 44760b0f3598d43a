"""Checks of a prepared dataset against what the benchmark's dataset is known to hold.

:func:`check_dataset` returns one line per problem (empty = the dataset passed). What is checked:

- **image counts** (``expect="full"``): the official sets' sizes (:data:`IMAGE_COUNTS`; COCO's split
  files are checked by the size of the image folder they draw from); the synthetic world's sizes
  come from its ``world.json``. ``expect="reduced"`` (tiny test fixtures, subsets) skips them.
- **the class table**: count, names and ids against the official tables where they are fixed
  (COCO splits and panoptic, ADE20K-150 panoptic with colours, ADE20K-847), the class count where
  the names come from the release's own files (ADE20K-150 semantic, Pascal Context), and the
  synthetic world's JSON categories against the package's table.
- **every image has its annotation**: image files exist; semantic sets: every image of the image
  folder has its label file (Pascal Context: every image of the split list); panoptic sets: every
  image of the JSON has its annotation and PNG; COCO split files: every image has an annotation;
  label maps and panoptic PNGs have their image's size.
- **label values** in ``0..K-1`` or the ignore label.
- **segments**: panoptic segments non-empty (``area > 0``), every id of a panoptic PNG has its JSON
  segment, every JSON segment is in the PNG (except ADE20K-150 stuff that things cover completely,
  which the official preparation keeps), categories known to the dataset. Instance annotations
  must be non-empty in the synthetic world only: a real release may hold degenerate ones (boxes
  under a pixel), which training drops, and they are no reason to stop a run.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

EXPECT_MODES = ("full", "reduced")
# images of the official validation / training sets
IMAGE_COUNTS = {
    "coco_2017_val_panoptic": 5000, "coco_2017_train_panoptic": 118287,
    "ade20k_sem_seg_val": 2000, "ade20k_panoptic_val": 2000, "ade20k_full_sem_seg_val": 2000,
    "pascal_context_59_sem_seg_val": 5105, "pascal_context_459_sem_seg_val": 5105,
}
# COCO split files keep only images with annotations of the split: check the folder they draw from
IMAGE_FOLDER_COUNTS = {"val": ("coco/val2017", 5000), "train": ("coco/train2017", 118287)}
CLASS_COUNTS = {"ade20k_sem_seg_val": 150, "ade20k_panoptic_val": 150, "ade20k_full_sem_seg_val": 847,
                "pascal_context_59_sem_seg_val": 59, "pascal_context_459_sem_seg_val": 459,
                "coco_2017_val_panoptic": 133, "coco_2017_train_panoptic": 133}
# panoptic sets whose stuff segments may be covered completely by things (kept with their area)
COVERED_STUFF_ALLOWED = {"ade20k_panoptic_val"}
# semantic sets whose image folder may hold images of other splits (the split list names theirs)
SPLIT_LIST_SETS = {"pascal_context_59_sem_seg_val", "pascal_context_459_sem_seg_val"}
# prepared class-table files (under the datasets root) of semantic sets whose table is fixed
CATEGORY_FILES = {"ade20k_full_sem_seg_val": "ADE20K_2021_17_01/categories_847.json"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MAX_LINES_PER_KIND = 20


def expected_table(name: str) -> list[dict] | None:
    """The fixed class table the dataset must hold (``[{"id", "name", ...}]``, dataset ids), or None."""
    from .datasets.ade20k import ade150_panoptic_table, ade847_table
    from .datasets.coco import OV_SPLITS, ovsplit_categories, panoptic_categories

    if name.startswith("coco_instance_") and name.rsplit("_", 1)[-1] in OV_SPLITS:
        return ovsplit_categories(name.rsplit("_", 1)[-1])
    if name in ("coco_2017_val_panoptic", "coco_2017_train_panoptic"):
        return panoptic_categories()
    if name == "ade20k_panoptic_val":
        return ade150_panoptic_table()
    if name == "ade20k_full_sem_seg_val":
        return ade847_table()
    return None


def synthetic_counts(name: str, root: Path) -> int | None:
    """Images of a synthetic set, from the world's own ``world.json`` (None when not synthetic)."""
    from .datasets.synthetic import INSTANCE_SPLITS, PANOPTIC_SPLITS, ROOT, SEM_SEG_SPLITS

    split = (INSTANCE_SPLITS.get(name, (None, None))[1] or PANOPTIC_SPLITS.get(name, (None,))[0]
             or SEM_SEG_SPLITS.get(name, (None,))[0])
    if split is None:
        return None
    world = json.loads((root / ROOT / "world.json").read_text(encoding="utf-8"))
    return int(world["splits"][split]["num_images"])


def _compare_tables(got: list[dict], want: list[dict], where: str, keys: Iterable[str]) -> list[str]:
    problems = []
    if len(got) != len(want):
        problems.append(f"{where}: {len(got)} classes, expected {len(want)}")
    got_by_id, want_by_id = {int(c["id"]): c for c in got}, {int(c["id"]): c for c in want}
    missing, extra = sorted(set(want_by_id) - set(got_by_id)), sorted(set(got_by_id) - set(want_by_id))
    if missing:
        problems.append(f"{where}: class ids missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if extra:
        problems.append(f"{where}: unexpected class ids: {extra[:10]}{' ...' if len(extra) > 10 else ''}")
    if [int(c["id"]) for c in got] != [int(c["id"]) for c in want] and not missing and not extra:
        problems.append(f"{where}: classes are not in the expected order")
    for i in sorted(set(got_by_id) & set(want_by_id)):
        for key in keys:
            if key in want_by_id[i] and got_by_id[i].get(key) != want_by_id[i][key]:
                problems.append(f"{where}: class {i} has {key} {got_by_id[i].get(key)!r}, expected "
                                f"{want_by_id[i][key]!r}")
    return problems


def _json_categories(meta) -> tuple[Path | None, list[dict] | None]:
    from .datasets.common import resolve_path

    for key in ("panoptic_json", "json_file"):
        if meta.get(key):
            path = resolve_path(meta.get(key))
            with open(path, encoding="utf-8") as fh:
                return path, json.load(fh)["categories"]
    return None, None


def _check_classes(name: str, meta) -> tuple[list[str], int]:
    """Class-table problems and the number of classes K (labels must be < K)."""
    from .datasets.common import datasets_root
    from .manifest import class_table

    problems = []
    table = class_table(name)
    want = expected_table(name)
    json_path, json_cats = _json_categories(meta)
    if json_cats is not None:  # COCO-format sets: the JSON's own categories
        if want is not None:
            keys = ["name"] + [k for k in ("isthing", "color") if k in want[0]]
            problems += _compare_tables(json_cats, want, str(json_path), keys)
        if name.startswith("synthetic"):  # the world's JSONs against the package's category table
            meta_table = [{"id": c["dataset_id"], "name": c["name"]} for c in table]
            problems += _compare_tables(json_cats, meta_table, str(json_path), ["name"])
    elif want is not None:  # semantic sets with a fixed table: the prepared table file (dataset ids)
        source = datasets_root() / CATEGORY_FILES[name]
        got = json.loads(source.read_text(encoding="utf-8"))
        problems += _compare_tables(got, want, str(source), ["name"])
    count = CLASS_COUNTS.get(name)
    if count is not None and len(table) != count and not any("classes, expected" in p for p in problems):
        problems.append(f"{name}: {len(table)} classes, expected {count}")
    return problems, len(table)


def _label_problems(path: str, num_classes: int, ignore: int, size: tuple[int, int]) -> list[str]:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            label = np.asarray(im)
    except OSError as err:
        return [f"{path}: unreadable label file ({err})"]
    problems = []
    if label.ndim != 2:
        problems.append(f"{path}: label map has shape {label.shape}, expected one channel")
        return problems
    if label.shape != size:
        problems.append(f"{path}: label map is {label.shape[0]}x{label.shape[1]}, its image {size[0]}x{size[1]}")
    values = np.unique(label)
    bad = [int(v) for v in values if not (0 <= int(v) < num_classes or int(v) == ignore)]
    if bad:
        problems.append(f"{path}: label values {bad[:10]} outside 0..{num_classes - 1} (ignore {ignore})")
    return problems


def _panoptic_problems(rec: dict, allow_covered_stuff: bool) -> list[str]:
    import numpy as np
    from panopticapi.utils import rgb2id
    from PIL import Image

    path = rec["pan_seg_file_name"]
    try:
        with Image.open(path) as im:
            ids = rgb2id(np.asarray(im.convert("RGB"), dtype=np.uint32))
    except OSError as err:
        return [f"{path}: unreadable panoptic PNG ({err})"]
    problems = []
    if ids.shape != (rec["height"], rec["width"]):
        problems.append(f"{path}: panoptic PNG is {ids.shape[0]}x{ids.shape[1]}, its image "
                        f"{rec['height']}x{rec['width']}")
    present = {int(v) for v in np.unique(ids)} - {0}
    segments = {int(s["id"]): s for s in rec["segments_info"]}
    for sid in sorted(present - set(segments)):
        problems.append(f"{path}: segment id {sid} has no segment in the JSON")
    for sid, seg in segments.items():
        if int(seg.get("area", 0)) <= 0:
            problems.append(f"{path}: segment {sid} is empty (area {seg.get('area', 0)})")
        elif sid not in present and (seg["isthing"] or not allow_covered_stuff):
            problems.append(f"{path}: JSON segment {sid} has no pixel in the PNG")
    return problems


def _record_problems(rec: dict, spec: dict) -> list[str]:
    """Problems of one image record (run in worker processes)."""
    problems = []
    if not Path(rec["file_name"]).is_file():
        return [f"{rec['file_name']}: image file missing"]
    if "sem_seg_file_name" in rec:
        if not Path(rec["sem_seg_file_name"]).is_file():
            problems.append(f"{rec['sem_seg_file_name']}: label file missing (image {rec['file_name']})")
        else:
            problems += _label_problems(rec["sem_seg_file_name"], spec["num_classes"], spec["ignore"],
                                        (rec["height"], rec["width"]))
    if "pan_seg_file_name" in rec:
        if not Path(rec["pan_seg_file_name"]).is_file():
            problems.append(f"{rec['pan_seg_file_name']}: panoptic PNG missing (image {rec['file_name']})")
        else:
            problems += _panoptic_problems(rec, spec["covered_stuff"])
    if spec["annotated"] and not rec.get("annotations", [None]):
        problems.append(f"{rec['file_name']}: image has no annotation in the split file")
    if spec["empty_instances_fatal"]:  # real COCO has a few degenerate boxes; the loaders drop them
        for k, ann in enumerate(rec.get("annotations", [])):
            if "area" in ann and float(ann["area"]) <= 0:
                problems.append(f"{rec['file_name']}: annotation {k} is empty (area {ann['area']})")
    return problems


def _records_with_area(name: str, records: list[dict], meta) -> list[dict]:
    """Instance records carry no area; take it from the JSON (non-empty check)."""
    from .datasets.common import resolve_path

    if not records or "annotations" not in records[0] or not meta.get("json_file"):
        return records
    with open(resolve_path(meta.json_file), encoding="utf-8") as fh:
        data = json.load(fh)
    areas: dict = {}
    for ann in data.get("annotations", []):
        areas.setdefault(ann["image_id"], []).append(ann.get("area", 1))
    return [dict(r, annotations=[dict(a, area=ar) for a, ar in zip(r["annotations"], areas.get(r["image_id"], []))])
            for r in records]


def _unannotated_images(records: list[dict], meta) -> list[str]:
    """Images without annotation: for semantic sets, images of the image folder that no label file
    names; for panoptic sets, images of the JSON without an annotation entry."""
    if not records:
        return []
    if "pan_seg_file_name" in records[0]:
        from .datasets.common import resolve_path

        with open(resolve_path(meta.panoptic_json), encoding="utf-8") as fh:
            data = json.load(fh)
        annotated = {a["image_id"] for a in data.get("annotations", [])}
        return [f"{img.get('file_name', img['id'])}: image has no annotation in {resolve_path(meta.panoptic_json)}"
                for img in data.get("images", []) if img["id"] not in annotated]
    if "sem_seg_file_name" not in records[0] or meta.name in SPLIT_LIST_SETS:
        return []
    folders = {Path(r["file_name"]).parent for r in records}
    named = {str(Path(r["file_name"])) for r in records}
    out = []
    for folder in sorted(folders):
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_EXTS and str(p) not in named:
                out.append(f"{p}: image has no annotation")
    return out


def _limit(lines: list[str]) -> list[str]:
    """At most MAX_LINES_PER_KIND lines of each kind of problem, then a count of the rest."""
    out, kinds = [], Counter()
    for line in lines:
        key = re.sub(r"[0-9][0-9, ]*", "#", line.split(": ", 1)[-1])[:48]
        kinds[key] += 1
        if kinds[key] <= MAX_LINES_PER_KIND:
            out.append(line)
    for key, n in kinds.items():
        if n > MAX_LINES_PER_KIND:
            out.append(f"... and {n - MAX_LINES_PER_KIND} more problems like '{key} ...'")
    return out


def check_dataset(name: str, expect: str = "full", workers: int = 1,
                  progress: Callable[[str], None] | None = None,
                  table_departs: bool = False) -> tuple[list[str], dict]:
    """Check one registered dataset under the current datasets root.

    Args:
        table_departs: the preparation chose a class table other than the official one on purpose
            (its manifest says so): differences from the official table are notes, not problems.

    Returns:
        (problems, one line each, prefixed with the dataset name; summary {"images", "classes",
        "notes"}).
    """
    from .catalog import DatasetCatalog
    from .datasets.common import forget_lazy_metadata

    if expect not in EXPECT_MODES:
        raise ValueError(f"expect must be one of {EXPECT_MODES}, got {expect!r}")
    if name not in DatasetCatalog:
        return [f"{name}: not a registered dataset"], {}
    forget_lazy_metadata(name)  # read class names from the files on disk now
    try:
        return _check(name, expect, workers, progress, table_departs)
    finally:
        forget_lazy_metadata(name)  # and leave no names read under this root behind


def _check(name: str, expect: str, workers: int, progress, table_departs: bool) -> tuple[list[str], dict]:
    from .catalog import DatasetCatalog, MetadataCatalog
    from .datasets.common import DatasetNotFoundError, datasets_root

    meta = MetadataCatalog.get(name)
    try:
        records = DatasetCatalog.get(name)
        class_problems, num_classes = _check_classes(name, meta)
    except DatasetNotFoundError as err:
        return [f"{name}: " + " ".join(str(err).split())], {}
    except KeyError as err:  # the panoptic loader maps every segment's category
        return [f"{name}: cannot be loaded: an annotation names category {err}, not one of the dataset's"], {}
    except (ValueError, OSError) as err:
        return [f"{name}: cannot be loaded: {type(err).__name__}: {err}"], {}
    class_problems = [f"{name}: {p}" if not p.startswith(name) else p for p in class_problems]
    notes = [f"{p} (departs from the official table, as prepared)" for p in class_problems] if table_departs else []
    problems = [] if table_departs else class_problems
    root = datasets_root()
    want = synthetic_counts(name, root) if name.startswith("synthetic") else None
    if want is None and expect == "full":
        want = IMAGE_COUNTS.get(name)
    if want is not None and len(records) != want:
        problems.append(f"{name}: {len(records)} images, expected {want}")
    if expect == "full" and name.startswith("coco_instance_"):
        phase = name.split("_")[2]
        folder, count = IMAGE_FOLDER_COUNTS[phase]
        n = sum(1 for p in (root / folder).glob("*.jpg")) if (root / folder).is_dir() else 0
        if n != count:
            problems.append(f"{name}: {root / folder} holds {n} images, expected {count}")
    if not records:
        problems.append(f"{name}: no images")
    spec = {"num_classes": num_classes, "ignore": int(meta.get("ignore_label", 255)),
            "covered_stuff": name in COVERED_STUFF_ALLOWED,
            "annotated": name.startswith("coco_instance_"),  # split files keep annotated images only
            "empty_instances_fatal": name.startswith("synthetic")}
    try:
        records = _records_with_area(name, records, meta)
    except (OSError, ValueError) as err:
        problems.append(f"{name}: {err}")
    if progress:
        progress(f"{name}: checking {len(records)} images")
    per_image: list[str] = []
    if workers > 1 and len(records) > 1:
        import multiprocessing
        from functools import partial

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for lines in pool.imap(partial(_record_problems, spec=spec), records, chunksize=32):
                per_image += lines
    else:
        for rec in records:
            per_image += _record_problems(rec, spec)
    per_image += _unannotated_images(records, meta)
    problems += [f"{name}: {p}" for p in _limit(per_image)]
    return problems, {"images": len(records), "classes": num_classes, "notes": notes}


def datasets_of(target: str, root: Path) -> list[str] | None:
    """The registered names a check target stands for: a preparation name (from its manifest, or
    from what that preparation makes by default) or a registered dataset name; None if neither."""
    from . import prepare
    from .catalog import DatasetCatalog
    from .manifest import read_manifest

    if target in DatasetCatalog:
        return [target]
    manifest = read_manifest(root, target)
    if manifest is not None:
        return sorted(manifest.get("datasets", {}))
    from ..cli import iter_plugin_modules

    for module in iter_plugin_modules(prepare):
        if module.COMMAND == target and hasattr(module, "registered_datasets"):
            import argparse

            parser = argparse.ArgumentParser()
            module.add_arguments(parser)
            return module.registered_datasets(parser.parse_args([]))
    return None
