"""Pascal Context conversion shared by the ``pascal-context-59`` and ``pascal-context-459`` plugins.

Raw release (default ROOT/VOCdevkit/VOC2010, --source to change): JPEGImages/<id>.jpg (VOC 2010),
trainval/<id>.mat (from Pascal Context's trainval.tar.gz; ``LabelMap`` uint16, 0 = unlabeled,
k = the k-th class of labels.txt), labels.txt ("k: name", 459 lines), 59_labels.txt (the 59-class
subset as "k: name" lines, named as in labels.txt; line order = label order) and the validation list ImageSets/Main/val.txt.
Output under ROOT/pascal_context_full: images/<id>.jpg, val.txt, labels_59/<id>.png (uint8,
0..58, 255 = ignore) or labels_459/<id>.tif (uint16, 0..458, 65535 = ignore), categories_N.json.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

PASCAL_DOWNLOAD = ("download VOCtrainval_03-May-2010.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2010/) and "
                   "Pascal Context's trainval.tar.gz, labels.txt and 59_labels.txt "
                   "(https://cs.stanford.edu/~roozbeh/pascal-context/) and place them so that {src} holds "
                   "JPEGImages/, trainval/*.mat, labels.txt, 59_labels.txt and ImageSets/Main/val.txt")


def add_arguments(parser) -> None:
    from ._common import add_root_argument

    add_root_argument(parser)
    parser.add_argument("--source", default="", help="raw release folder (default ROOT/VOCdevkit/VOC2010)")
    parser.add_argument("--split-file", default="", help="image ids to convert (default SOURCE/ImageSets/Main/val.txt)")


def read_labels(path: Path) -> dict[int, str]:
    """A ``k: name`` label file -> {k: name}, in the file's line order."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*(\d+)\s*:\s*(.+?)\s*$", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


def prepare_pascal_context(root: Path, num_classes: int, source: str = "", split_file: str = "") -> int:
    """Convert the validation images for ``num_classes`` (59 or 459); returns the number written."""
    import numpy as np
    import scipy.io
    from PIL import Image

    from ..datasets.common import require
    from ..datasets.pascal_context import LABEL_FORMATS, PASCAL_ROOT

    src = Path(source) if source else root / "VOCdevkit/VOC2010"
    split = Path(split_file) if split_file else src / "ImageSets/Main/val.txt"
    needed = [src / "JPEGImages", src / "trainval", src / "labels.txt", split]
    if num_classes == 59:
        needed.append(src / "59_labels.txt")
    require(f"pascal-context-{num_classes} input", needed, PASCAL_DOWNLOAD.format(src=src))
    full = read_labels(src / "labels.txt")
    if num_classes == 459:
        classes = [full[k] for k in sorted(full)]
        lut = {k: i for i, k in enumerate(sorted(full))}
    else:
        by_name = {n: k for k, n in full.items()}
        # line order is label order; the numbers in 59_labels.txt are not relied on
        classes = list(read_labels(src / "59_labels.txt").values())
        missing = [n for n in classes if n not in by_name]
        if missing:
            raise ValueError(f"59_labels.txt names {missing} are not in labels.txt")
        lut = {by_name[n]: i for i, n in enumerate(classes)}
    if len(classes) != num_classes:
        raise ValueError(f"expected {num_classes} classes, the label files give {len(classes)}")
    ext, ignore = LABEL_FORMATS[num_classes]
    dtype = np.uint8 if ignore <= np.iinfo(np.uint8).max else np.uint16
    out = root / PASCAL_ROOT
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / f"labels_{num_classes}").mkdir(parents=True, exist_ok=True)
    ids = [s.strip() for s in split.read_text().splitlines() if s.strip()]
    ids = [i for i in ids if (src / "trainval" / f"{i}.mat").exists()]
    table = np.full(max(full) + 1, ignore, dtype=np.int64)
    for k, v in lut.items():
        table[k] = v
    for image_id in ids:
        label_map = np.asarray(scipy.io.loadmat(src / "trainval" / f"{image_id}.mat")["LabelMap"], dtype=np.int64)
        label = table[np.clip(label_map, 0, len(table) - 1)].astype(dtype)
        Image.fromarray(label).save(out / f"labels_{num_classes}" / f"{image_id}.{ext}")
        if not (out / "images" / f"{image_id}.jpg").exists():
            shutil.copyfile(src / "JPEGImages" / f"{image_id}.jpg", out / "images" / f"{image_id}.jpg")
    (out / "val.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    (out / f"categories_{num_classes}.json").write_text(
        json.dumps([{"id": i, "name": n} for i, n in enumerate(classes)], indent=0), encoding="utf-8")
    print(f"{out / f'labels_{num_classes}'}: {len(ids)} validation images, {num_classes} classes")
    return len(ids)
