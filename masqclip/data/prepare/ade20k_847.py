"""ADE20K-Full (847 classes) semantic labels from the full ADE20K release (ADE20K_2021_17_01).

Input under ROOT/ADE20K_2021_17_01: index_ade20k.pkl (a dict with, per image, ``filename`` and
``folder`` (relative to ROOT), and per class ``objectnames``; ``objectPresence`` [classes, images]
counts instances) and each image's ``<name>_seg.png``, whose class map is R / 10 * 256 + G
(0 = unlabeled, k = objectnames[k - 1]).

The 847 classes: by default those present in both training and validation images (the
MaskFormer paper's selection rule), ordered by the number of images containing them (most
frequent first). That rule is implemented as documented but cannot be checked against the
full release offline; ``--categories FILE`` (a JSON list of {"id": class-map value, "name"} in
label order) pins the exact table instead.

Output (validation images): images_detectron2/validation/<name>.jpg and
annotations_detectron2/validation/<name>.tif (uint16, 65535 = ignore), resized so the shorter
side is at most --max-short-side (512, as the benchmark's preparation), and categories_847.json.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where the work happens
    import numpy as np

import json
import logging
import pickle
import shutil
from pathlib import Path

from ._common import add_root_argument, root_from_args, run_reporting_missing

COMMAND = "ade20k-847"
HELP = "ADE20K-Full 847-class semantic labels from ADE20K_2021_17_01"
EXPECTED_CLASSES = 847
logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_root_argument(parser)
    parser.add_argument("--categories", default="", help="JSON [{id, name}] fixing the class table (default: derived)")
    parser.add_argument("--max-short-side", type=int, default=512, help="resize when the shorter side exceeds this")


def split_of(filename: str) -> str:
    """``ADE_val_00000001.jpg`` -> "validation", ``ADE_train_...`` -> "training"."""
    return "validation" if filename.split("_")[1] == "val" else "training"


def select_categories(index: dict) -> list[dict]:
    """Classes present in both training and validation images, most frequent (in images) first."""
    import numpy as np

    presence = np.asarray(index["objectPresence"]) > 0  # [classes, images]
    is_val = np.array([split_of(f) == "validation" for f in index["filename"]])
    in_train, in_val = presence[:, ~is_val].any(axis=1), presence[:, is_val].any(axis=1)
    images_with = presence.sum(axis=1)
    chosen = [k for k in np.nonzero(in_train & in_val)[0]]
    chosen.sort(key=lambda k: (-int(images_with[k]), int(k)))
    return [{"id": int(k) + 1, "name": str(index["objectnames"][k])} for k in chosen]


def class_map(seg_png: Path) -> "np.ndarray":
    """The class map (int64 [H, W], 0 = unlabeled) of an ADE20K ``*_seg.png``."""
    import numpy as np
    from PIL import Image

    with Image.open(seg_png) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    return rgb[..., 0] // 10 * 256 + rgb[..., 1]


def prepare_ade20k_847(root: Path, categories_file: str = "", max_short_side: int = 512) -> list[dict]:
    """Convert the validation images; returns the class table written to categories_847.json."""
    import numpy as np
    from PIL import Image

    from ..datasets.ade20k import ADE_FULL_DOWNLOAD, ADE_FULL_ROOT, FULL_IGNORE_LABEL
    from ..datasets.common import require

    full = root / ADE_FULL_ROOT
    require("ade20k-847 input", [full / "index_ade20k.pkl"], ADE_FULL_DOWNLOAD.format(root=root))
    with open(full / "index_ade20k.pkl", "rb") as fh:
        index = pickle.load(fh)
    if categories_file:
        categories = json.loads(Path(categories_file).read_text(encoding="utf-8"))
    else:
        categories = select_categories(index)
    if len(categories) != EXPECTED_CLASSES:
        logger.warning("ade20k-847: %d classes selected (the benchmark has %d)", len(categories), EXPECTED_CLASSES)
    lut = {c["id"]: k for k, c in enumerate(categories)}
    img_out, lab_out = full / "images_detectron2/validation", full / "annotations_detectron2/validation"
    img_out.mkdir(parents=True, exist_ok=True)
    lab_out.mkdir(parents=True, exist_ok=True)
    count = 0
    for folder, name in zip(index["folder"], index["filename"]):
        if split_of(name) != "validation":
            continue
        src = root / folder / name
        require("ade20k-847 input", [src, src.with_name(src.stem + "_seg.png")], ADE_FULL_DOWNLOAD.format(root=root))
        classes = class_map(src.with_name(src.stem + "_seg.png"))
        label = np.full(classes.shape, FULL_IGNORE_LABEL, dtype=np.uint16)
        for value in np.unique(classes):
            if int(value) in lut:
                label[classes == value] = lut[int(value)]
        h, w = label.shape
        if min(h, w) > max_short_side:
            scale = max_short_side / min(h, w)
            size = (max_short_side, round(w * scale)) if h <= w else (round(h * scale), max_short_side)
            with Image.open(src) as im:
                im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR).save(img_out / name)
            Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST).save(lab_out / f"{src.stem}.tif")
        else:
            shutil.copyfile(src, img_out / name)
            Image.fromarray(label).save(lab_out / f"{src.stem}.tif")
        count += 1
    (full / "categories_847.json").write_text(json.dumps(categories, indent=0), encoding="utf-8")
    print(f"{lab_out}: {count} validation images, {len(categories)} classes")
    return categories


def main(args) -> int:
    return run_reporting_missing(COMMAND, lambda: prepare_ade20k_847(
        root_from_args(args), args.categories, args.max_short_side))
