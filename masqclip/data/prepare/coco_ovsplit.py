"""Write the COCO open-vocabulary split files (Bansal et al.'s 48 base / 17 novel classes).

From coco/annotations/instances_{train,val}2017.json, writes
coco/annotations/ov_split_48_17/instances_{train,val}2017_{seen48,unseen17,instances65}.json:
each keeps the split's categories (COCO ids preserved), their annotations, and the images that
have at least one of them. base48 training therefore holds base annotations only.
"""
from __future__ import annotations

import json
from pathlib import Path

from ._common import add_root_argument, root_from_args, run_reporting_missing

COMMAND = "coco-ovsplit"
HELP = "COCO base48 / novel17 / instances65 JSONs from instances_{train,val}2017.json"


def add_arguments(parser) -> None:
    add_root_argument(parser)
    parser.add_argument("--phases", nargs="+", default=["train", "val"], choices=["train", "val"])


def prepare_coco_ovsplit(root: Path, phases=("train", "val")) -> list[Path]:
    """Write the split files of ``phases`` under ``root``; returns the written paths."""
    from ..datasets.coco import COCO_DOWNLOAD, OV_SPLITS, ovsplit_categories, ovsplit_json
    from ..datasets.common import require

    sources = {p: root / f"coco/annotations/instances_{p}2017.json" for p in phases}
    require("coco-ovsplit input", sources.values(), COCO_DOWNLOAD.format(
        what="2017 Train/Val annotations (annotations_trainval2017.zip)", where=root / "coco"))
    written = []
    for phase, src in sources.items():
        with open(src, encoding="utf-8") as fh:
            data = json.load(fh)
        release = {c["id"]: c["name"] for c in data["categories"]}
        for split in OV_SPLITS:
            wanted = {c["id"]: c["name"] for c in ovsplit_categories(split)}
            wrong = {i: n for i, n in wanted.items() if release.get(i) != n}
            if wrong:
                raise ValueError(f"{src}: categories {wrong} are not named as in COCO 2017 ({src} has "
                                 f"{ {i: release.get(i) for i in wrong} })")
            anns = [a for a in data["annotations"] if a["category_id"] in wanted]
            image_ids = {a["image_id"] for a in anns}
            out = {k: data[k] for k in ("info", "licenses") if k in data}
            out["categories"] = [c for c in data["categories"] if c["id"] in wanted]
            out["images"] = [img for img in data["images"] if img["id"] in image_ids]
            out["annotations"] = anns
            dst = root / ovsplit_json(phase, split)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(out), encoding="utf-8")
            tmp.replace(dst)
            written.append(dst)
            print(f"{dst}: {len(out['categories'])} categories, {len(out['images'])} images, {len(anns)} annotations")
    return written


def registered_datasets(args) -> list[str]:
    from ..datasets.coco import OV_SPLITS

    return [f"coco_instance_{phase}_{split}" for phase in args.phases for split in OV_SPLITS]


def main(args) -> int:
    return run_reporting_missing(COMMAND, lambda: prepare_coco_ovsplit(root_from_args(args), tuple(args.phases)),
                                 args=args, datasets=registered_datasets(args))
