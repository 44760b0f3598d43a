"""ADE20K-Full (847 classes) semantic labels from the full ADE20K release (ADE20K_2021_17_01).

Input under ROOT/ADE20K_2021_17_01: index_ade20k.pkl (a dict with, per image, ``filename`` and
``folder`` (relative to ROOT), and per class ``objectnames``; ``objectPresence`` [classes, images]
counts instances) and each image's ``<name>_seg.png``, whose class map is R / 10 * 256 + G
(0 = unlabeled).

Output (validation images), as the official preparation (MaskFormer's) makes it:
images_detectron2/validation/<name>.jpg and annotations_detectron2/validation/<name>.tif (uint16,
label = position of the class in the 847-class table, 65535 = ignore), and categories_847.json.
An image whose shorter side exceeds --max-short-side (512) is resized so that side is 512 (the
other rounded), with OpenCV's bilinear interpolation (labels: OpenCV's nearest); every image is
then written as JPEG at quality 75, resized or not.

Options that depart from the official data (say so in any result made from them):
``--categories derived`` (classes present in both training and validation images, most frequent
first: the MaskFormer paper's selection rule, not its fixed table), ``--categories FILE`` (a JSON
list of {"id": class-map value, "name"} in label order), ``--keep-original-images`` (images that
need no resizing are copied byte for byte instead of re-encoded).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where the work happens
    import numpy as np

import json
import logging
import shutil
from pathlib import Path

from ...utils import safe_pickle
from ._common import add_root_argument, root_from_args, run_reporting_missing

COMMAND = "ade20k-847"
HELP = "ADE20K-Full 847-class semantic labels from ADE20K_2021_17_01"
EXPECTED_CLASSES = 847
JPEG_QUALITY = 75  # what the official preparation's PIL save writes (PIL's default)
logger = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    add_root_argument(parser)
    parser.add_argument("--categories", default="official",
                        help="class table: 'official' (the fixed 847-class table, default), 'derived' "
                             "(departs: selected from the index) or a JSON file [{id, name}] (departs)")
    parser.add_argument("--max-short-side", type=int, default=512, help="resize when the shorter side exceeds this")
    parser.add_argument("--keep-original-images", action="store_true",
                        help="departs from the official data: copy images that need no resizing instead "
                             "of re-encoding them as JPEG quality 75")


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


def resized_shape(h: int, w: int, max_short_side: int) -> tuple[int, int] | None:
    """(height, width) after the official rule, or None when the shorter side is <= ``max_short_side``."""
    if w >= h > max_short_side:
        return max_short_side, round(w / float(h) * max_short_side)
    if h >= w > max_short_side:
        return round(h / float(w) * max_short_side), max_short_side
    return None


def class_table(categories: str) -> list[dict] | None:
    """The table ``--categories`` names (None = derive it from the index)."""
    from ..datasets.ade20k import ade847_table

    if categories in ("", "official"):
        return ade847_table()
    if categories == "derived":
        return None
    return json.loads(Path(categories).read_text(encoding="utf-8"))


def prepare_ade20k_847(root: Path, categories: str = "official", max_short_side: int = 512,
                       keep_original_images: bool = False) -> list[dict]:
    """Convert the validation images; returns the class table written to categories_847.json."""
    import numpy as np
    from PIL import Image

    from ..datasets.ade20k import ADE_FULL_DOWNLOAD, ADE_FULL_ROOT, FULL_IGNORE_LABEL
    from ..datasets.common import require
    from ._cvresize import resize_bilinear_u8, resize_nearest

    full = root / ADE_FULL_ROOT
    require("ade20k-847 input", [full / "index_ade20k.pkl"], ADE_FULL_DOWNLOAD.format(root=root))
    index = safe_pickle.load(full / "index_ade20k.pkl")  # plain data and numpy arrays only
    table = class_table(categories)
    if table is None:
        table = select_categories(index)
        print(f"ade20k-847: class table derived from the index ({len(table)} classes): departs from the "
              "official fixed table")
    elif categories not in ("", "official"):
        print(f"ade20k-847: class table from {categories}: departs from the official fixed table")
    if len(table) != EXPECTED_CLASSES:
        logger.warning("ade20k-847: %d classes (the benchmark has %d)", len(table), EXPECTED_CLASSES)
    if keep_original_images:
        print("ade20k-847: --keep-original-images departs from the official data (images not re-encoded)")
    lut = {int(c["id"]): k for k, c in enumerate(table)}
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
        with Image.open(src) as im:
            image = np.asarray(im if im.mode in ("L", "RGB") else im.convert("RGB"))
        size = resized_shape(*image.shape[:2], max_short_side)
        if size is not None:
            image = resize_bilinear_u8(image, *size)
            classes = resize_nearest(classes, *size)
        label = np.full(classes.shape, FULL_IGNORE_LABEL, dtype=np.uint16)
        for value in np.unique(classes):
            if int(value) in lut:
                label[classes == value] = lut[int(value)]
        if keep_original_images and size is None:
            shutil.copyfile(src, img_out / name)
        else:
            Image.fromarray(image).save(img_out / name, format="JPEG", quality=JPEG_QUALITY)
        Image.fromarray(label).save(lab_out / f"{src.stem}.tif")
        count += 1
    (full / "categories_847.json").write_text(json.dumps(table, indent=0), encoding="utf-8")
    print(f"{lab_out}: {count} validation images, {len(table)} classes")
    return table


def registered_datasets(args) -> list[str]:
    return ["ade20k_full_sem_seg_val"]


def departures(args) -> list[str]:
    """How the options make the data depart from the official preparation (recorded in the manifest)."""
    out = []
    if args.categories not in ("", "official"):
        out.append("class table: " + ("derived from the index" if args.categories == "derived" else args.categories))
    if args.keep_original_images:
        out.append("images: originals kept where no resizing was needed")
    if args.max_short_side != 512:
        out.append(f"images: shorter side limited to {args.max_short_side}, not 512")
    return out


def main(args) -> int:
    return run_reporting_missing(COMMAND, lambda: prepare_ade20k_847(
        root_from_args(args), args.categories, args.max_short_side, args.keep_original_images),
        args=args, datasets=registered_datasets(args), departures=departures(args))
