"""Miniature copies of the raw dataset releases, written by the tests (a handful of tiny images each).

Each ``make_*`` writes the release's files under ``root`` in its own format and returns what the
preparation and loading must produce from them.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import scipy.io
from panopticapi.utils import id2rgb
from PIL import Image

from masqclip.data.datasets.coco import panoptic_categories


def _jpg(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------
COCO_H, COCO_W = 32, 40


def _rle(mask: np.ndarray, compressed: bool = True) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    # uncompressed: run lengths in column-major order starting with zeros
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def coco_masks() -> dict[str, np.ndarray]:
    m = {}
    for key, (y0, x0, y1, x1) in {"a": (2, 2, 12, 14), "b": (14, 20, 30, 38), "c": (0, 30, 8, 40),
                                  "d": (20, 0, 32, 12)}.items():
        mask = np.zeros((COCO_H, COCO_W), dtype=bool)
        mask[y0:y1, x0:x1] = True
        m[key] = mask
    return m


def make_coco(root: Path) -> dict:
    """coco/{train,val}2017 images, instances_{train,val}2017.json, panoptic_val2017{.json,/}."""
    coco = root / "coco"
    things = [c for c in panoptic_categories() if c["isthing"]]
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "x"} for c in things]
    m = coco_masks()
    poly_a = [[2.0, 2.0, 14.0, 2.0, 14.0, 12.0, 2.0, 12.0]]  # mask "a" as a polygon
    # (image id, category id, segmentation, iscrowd)
    val = [(11, 1, poly_a, 0), (11, 17, _rle(m["b"]), 0), (12, 10, _rle(m["c"]), 0),
           (13, 18, _rle(m["d"], compressed=False), 0), (13, 6, _rle(m["a"]), 0)]
    train = [(21, 1, _rle(m["a"]), 0), (21, 28, _rle(m["b"]), 0), (22, 37, _rle(m["c"]), 0)]
    for phase, anns in (("val", val), ("train", train)):
        image_ids = sorted({a[0] for a in anns})
        for i in image_ids:
            _jpg(coco / f"{phase}2017" / f"{i:012d}.jpg", COCO_H, COCO_W, seed=i)
        data = {"info": {"description": "mini"}, "licenses": [], "categories": categories,
                "images": [{"id": i, "file_name": f"{i:012d}.jpg", "height": COCO_H, "width": COCO_W}
                           for i in image_ids],
                "annotations": [{"id": k + 1, "image_id": i, "category_id": c, "segmentation": s, "iscrowd": crowd,
                                 "area": 1.0, "bbox": [0, 0, 1, 1]} for k, (i, c, s, crowd) in enumerate(anns)]}
        (coco / "annotations").mkdir(parents=True, exist_ok=True)
        (coco / "annotations" / f"instances_{phase}2017.json").write_text(json.dumps(data))

    # panoptic val: image 11 = sky (187) top, grass (193) bottom, a person (1), a void corner
    seg = np.zeros((COCO_H, COCO_W), dtype=np.int64)
    seg[:16] = 300
    seg[16:] = 301
    seg[m["a"]] = 302
    seg[:2, :2] = 0
    infos = [{"id": 300, "category_id": 187}, {"id": 301, "category_id": 193}, {"id": 302, "category_id": 1}]
    _png(coco / "panoptic_val2017" / f"{11:012d}.png", id2rgb(seg))
    pan = {"images": [{"id": 11, "file_name": f"{11:012d}.jpg", "height": COCO_H, "width": COCO_W}],
           "annotations": [{"image_id": 11, "file_name": f"{11:012d}.png",
                            "segments_info": [dict(i, iscrowd=0, area=int((seg == i["id"]).sum()), bbox=[0, 0, 1, 1])
                                              for i in infos]}],
           "categories": [dict(c, supercategory="x", color=[1, 2, 3]) for c in panoptic_categories()]}
    (coco / "annotations" / "panoptic_val2017.json").write_text(json.dumps(pan))
    contiguous = {c["id"]: k for k, c in enumerate(panoptic_categories())}
    semantic = np.full(seg.shape, 255, dtype=np.int64)
    for i in infos:
        semantic[seg == i["id"]] = contiguous[i["category_id"]]
    return {"val_counts": {"base48": (1, 1), "novel17": (2, 3), "instances65": (2, 4)},
            "train_counts": {"base48": (1, 1), "novel17": (1, 1), "instances65": (1, 2)},
            "masks": m, "panoptic_seg": seg, "semantic": semantic}


# ---------------------------------------------------------------------------------------------
# ADE20K-150 (SceneParsing + instance annotations)
# ---------------------------------------------------------------------------------------------
ADE_NAMES = ["wall", "building, edifice", "sky", "floor, flooring", "tree"] + [f"class {k:03d}" for k in range(6, 151)]
ADE_NAMES[12] = "person, individual, someone"
ADE_NAMES[19] = "car, auto, automobile"
ADE_THING_MAP = {1: 13, 2: 20}  # instance class -> SceneParsing id (person, chair)
# SceneParsing ids (1-based) of the 100 thing classes of the official ADE20K-150 panoptic table
ADE_THINGS = [8, 9, 11, 13, 15, 16, 19, 20, 21, 23, 24, 25, 28, 31, 32, 33, 34, 36, 37, 38, 39, 40, 42, 43, 44, 45,
              46, 48, 50, 51, 54, 56, 57, 58, 59, 63, 65, 66, 67, 68, 70, 71, 72, 73, 74, 75, 76, 77, 79, 81, 82, 83,
              84, 86, 87, 88, 89, 90, 91, 93, 94, 96, 98, 99, 103, 104, 105, 108, 109, 111, 112, 113, 116, 117, 119,
              120, 121, 122, 124, 125, 126, 127, 128, 130, 131, 133, 134, 135, 136, 137, 138, 139, 140, 143, 144,
              145, 147, 148, 149, 150]


def make_ade20k(root: Path) -> dict:
    ade = root / "ADEChallengeData2016"
    ade.mkdir(parents=True, exist_ok=True)
    # as the release: tab-separated, with stray spaces after some indices and names
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{k}{' ' * (k % 2)}\t0.01\t10\t2\t{n}{' ' * (k % 3 == 0)}"
                                                 for k, n in enumerate(ADE_NAMES, 1)]
    (ade / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    # the release's 100 instance classes: 1 -> person (13), 2 -> chair (20), then the other thing classes
    rows = ["Instacne100\tSceneParse150\tFullADE20K", "1\t\t13\t\t1831", "2\t\t20\t\t401", "2\t\t20\t\t402"]
    rows += [f"{k}\t\t{sem}\t\t{9000 + k}" for k, sem in enumerate((t for t in ADE_THINGS if t not in (13, 20)), 3)]
    (ade / "ade20k_instance_catid_mapping.txt").write_text("\n".join(rows) + "\n")
    h, w = 24, 30
    expected = {}
    for n in (1, 2):
        stem = f"ADE_val_{n:08d}"
        _jpg(ade / "images/validation" / f"{stem}.jpg", h, w, seed=n)
        sem = np.zeros((h, w), dtype=np.uint8)
        sem[:10] = 1  # wall
        sem[10:] = 4  # floor
        sem[20:, :5] = 0  # other
        inst = np.zeros((h, w, 3), dtype=np.uint8)
        sem[2:8, 2:8] = 13  # person 1
        inst[2:8, 2:8] = (1, 1, 0)
        sem[12:18, 2:8] = 13  # person 2
        inst[12:18, 2:8] = (1, 2, 0)
        sem[12:18, 20:28] = 20  # car
        inst[12:18, 20:28] = (2, 3, 0)
        inst[18:20, 2:8] = (1, 2, 0)  # person 2's instance reaches into floor the semantic map keeps
        segments = [("stuff", 0), ("stuff", 3), ("thing", 12), ("thing", 12), ("thing", 19)]
        if n == 2:
            sem[0:2, 20:28] = 13  # person pixels without an instance: void in panoptic
        else:
            sem[12:14, 20:24] = 3  # sky that the chair instance covers completely: kept as a stuff segment
            segments.append(("stuff", 2))
        _png(ade / "annotations/validation" / f"{stem}.png", sem)
        _png(ade / "annotations_instance/validation" / f"{stem}.png", inst)
        # stuff segments as annotated (before things are painted): area and [x, y, w, h] of each class
        stuff = {}
        for label in (1, 3, 4):
            ys, xs = np.nonzero(sem == label)
            if len(ys):
                stuff[label - 1] = (len(ys), [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                              int(ys.max() - ys.min() + 1)])
        expected[stem] = {"semantic": np.where(sem == 0, 255, sem.astype(np.int64) - 1), "segments": segments,
                          "stuff": stuff}
    return expected


# ---------------------------------------------------------------------------------------------
# ADE20K full release (index_ade20k.pkl + *_seg.png)
# ---------------------------------------------------------------------------------------------
def _seg_png(path: Path, classes: np.ndarray) -> None:
    rgb = np.zeros((*classes.shape, 3), dtype=np.uint8)
    rgb[..., 0] = (classes // 256) * 10
    rgb[..., 1] = classes % 256
    rgb[..., 2] = 7  # instance channel: ignored
    _png(path, rgb)


def make_ade20k_full(root: Path) -> dict:
    names = ["-"] + [f"filler {k}" for k in range(1, 3200)]
    # name -> class-map value: the official table's ids (wall 2978 needs the R channel); 5 is in no table
    special = {"wall": 2978, "person": 1831, "cat": 430, "dog": 3105, "rare thing": 5}
    for n, v in special.items():
        names[v - 1] = n
    images = [  # (file, split folder, classes present, size)
        ("ADE_train_00000001.jpg", "training/a", ["wall", "person", "cat"], (16, 20)),
        ("ADE_train_00000002.jpg", "training/b", ["wall", "rare thing"], (16, 20)),
        ("ADE_val_00000001.jpg", "validation/a", ["wall", "person", "dog"], (16, 20)),
        ("ADE_val_00000002.jpg", "validation/b", ["wall", "person", "rare thing"], (40, 60)),
    ]
    presence = np.zeros((len(names), len(images)), dtype=np.int64)
    expected = {}
    for j, (file, folder, present, (h, w)) in enumerate(images):
        classes = np.zeros((h, w), dtype=np.int64)
        for k, n in enumerate(present):
            classes[:, k * w // len(present):] = special[n]
            presence[special[n] - 1, j] = 1
        classes[0, 0] = 0  # unlabeled
        base = root / "ADE20K_2021_17_01/images/ADE" / folder
        _jpg(base / file, h, w, seed=j)
        _seg_png(base / file.replace(".jpg", "_seg.png"), classes)
        expected[file.replace(".jpg", "")] = classes
    index = {"filename": [i[0] for i in images],
             "folder": [f"ADE20K_2021_17_01/images/ADE/{i[1]}" for i in images],
             "objectnames": names, "objectPresence": presence}
    with open(root / "ADE20K_2021_17_01/index_ade20k.pkl", "wb") as fh:
        pickle.dump(index, fh)
    # derived table: present in train and val: wall (4 images), person (3), rare thing (2); cat/dog one-sided
    return {"classes": ["wall", "person", "rare thing"], "values": [2978, 1831, 5], "class_maps": expected,
            "official_labels": {2978: 0, 1831: 11, 430: 500, 3105: 259}}


# ---------------------------------------------------------------------------------------------
# Pascal Context (.mat release over VOC 2010)
# ---------------------------------------------------------------------------------------------
PASCAL_459 = ["accordion", "aeroplane"] + [f"thing{k:03d}" for k in range(3, 460)]
PASCAL_459[9 - 1] = "bag"
PASCAL_459[284 - 1] = "person"
PASCAL_459[459 - 1] = "wool"
PASCAL_59 = ["aeroplane", "bag", "person", "wool"] + [PASCAL_459[k] for k in range(10, 65)]


def make_pascal_context(root: Path) -> dict:
    src = root / "VOCdevkit/VOC2010"
    (src / "trainval").mkdir(parents=True, exist_ok=True)
    (src / "ImageSets/Main").mkdir(parents=True, exist_ok=True)
    (src / "labels.txt").write_text("".join(f"{k}: {n}\n" for k, n in enumerate(PASCAL_459, 1)))
    # numbered by the 459-class index: the 59-class order is the line order
    (src / "59_labels.txt").write_text("".join(f"{PASCAL_459.index(n) + 1}: {n}\n" for n in PASCAL_59))
    ids = ["2008_000001", "2008_000002", "2008_000003"]  # the third has no .mat: skipped
    (src / "ImageSets/Main/val.txt").write_text("\n".join(ids) + "\n")
    maps = {}
    for k, image_id in enumerate(ids):
        _jpg(src / "JPEGImages" / f"{image_id}.jpg", 12, 14, seed=k)
        if k < 2:
            lm = np.zeros((12, 14), dtype=np.uint16)
            lm[:6] = 2  # aeroplane
            lm[6:, :7] = 284  # person
            lm[6:, 7:] = 459 if k == 0 else 300  # wool (in the 59) / thing300 (459 only)
            lm[0, 0] = 0  # unlabeled
            scipy.io.savemat(src / "trainval" / f"{image_id}.mat", {"LabelMap": lm})
            maps[image_id] = lm.astype(np.int64)
    _jpg(src / "JPEGImages" / "2008_000099.jpg", 12, 14)  # a training image: not converted
    return {"ids": ids[:2], "label_maps": maps}
