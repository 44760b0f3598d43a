"""Semantic label PNGs from COCO panoptic (as Mask2Former's semantic branch reads them).

From coco/annotations/panoptic_{train,val}2017.json + coco/panoptic_{train,val}2017/*.png, writes
coco/panoptic_semseg_{train,val}2017/*.png: each pixel holds the contiguous id (0..132, the
category's position in id order) of its segment, 255 where no segment is (void).
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from ._common import add_root_argument, root_from_args, run_reporting_missing

COMMAND = "coco-panoptic-semseg"
HELP = "semantic PNGs (contiguous ids, 255 = void) from COCO panoptic"
IGNORE_LABEL = 255


def add_arguments(parser) -> None:
    add_root_argument(parser)
    parser.add_argument("--phases", nargs="+", default=["train", "val"], choices=["train", "val"])
    parser.add_argument("--workers", type=int, default=1, help="conversion processes")


def _convert_one(ann: dict, pan_root: Path, out_root: Path, id_map: dict[int, int]) -> None:
    import numpy as np
    from panopticapi.utils import rgb2id
    from PIL import Image

    with Image.open(pan_root / ann["file_name"]) as im:
        ids = rgb2id(np.asarray(im.convert("RGB"), dtype=np.uint32))
    out = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for seg in ann["segments_info"]:
        out[ids == seg["id"]] = id_map[seg["category_id"]]
    Image.fromarray(out).save(out_root / ann["file_name"])


def prepare_coco_panoptic_semseg(root: Path, phases=("train", "val"), workers: int = 1) -> list[Path]:
    """Convert ``phases``; returns the output folders."""
    from ..datasets.coco import COCO_DOWNLOAD
    from ..datasets.common import require

    outputs = []
    for phase in phases:
        pan_json, pan_root = root / f"coco/annotations/panoptic_{phase}2017.json", root / f"coco/panoptic_{phase}2017"
        require("coco-panoptic-semseg input", [pan_json, pan_root], COCO_DOWNLOAD.format(
            what=f"the panoptic annotations (panoptic_annotations_trainval2017.zip; unzip panoptic_{phase}2017.zip "
                 "inside it too)", where=root / "coco"))
        with open(pan_json, encoding="utf-8") as fh:
            data = json.load(fh)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        if len(cats) > IGNORE_LABEL:
            raise ValueError(f"{pan_json}: {len(cats)} categories do not fit uint8 labels")
        id_map = {c["id"]: i for i, c in enumerate(cats)}
        out_root = root / f"coco/panoptic_semseg_{phase}2017"
        out_root.mkdir(parents=True, exist_ok=True)
        fn = partial(_convert_one, pan_root=pan_root, out_root=out_root, id_map=id_map)
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                pool.map(fn, data["annotations"], chunksize=64)
        else:
            for ann in data["annotations"]:
                fn(ann)
        print(f"{out_root}: {len(data['annotations'])} semantic PNGs")
        outputs.append(out_root)
    return outputs


def registered_datasets(args) -> list[str]:
    return [f"coco_2017_{phase}_panoptic" for phase in args.phases]


def main(args) -> int:
    return run_reporting_missing(COMMAND, lambda: prepare_coco_panoptic_semseg(
        root_from_args(args), tuple(args.phases), max(1, args.workers)),
        args=args, datasets=registered_datasets(args))
