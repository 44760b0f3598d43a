"""ADE20K-150 (SceneParsing) semantic and panoptic annotations in the detectron2 layout.

Inputs under ROOT/ADEChallengeData2016 (the SceneParsing release + its instance annotations):
  images/<phase>/*.jpg, annotations/<phase>/*.png (0 = other, 1..150), objectInfo150.txt,
  annotations_instance/<phase>/*.png (R = instance-class id 1..100, G = instance number, 0 = none),
  ade20k_instance_catid_mapping.txt (instance-class id -> SceneParsing-150 id; from the ADE20K toolkit).
Outputs:
  annotations_detectron2/<phase>/*.png: label - 1, "other" -> 255;
  ade20k_panoptic_<val|train>.json + ade20k_panoptic_<val|train>/*.png: COCO-panoptic format, as the
  official (Mask2Former) preparation writes it: category ids 0..149 with the short names and colours
  of the official ADE20K-150 panoptic table (masqclip/data/categories/ade20k_150_panoptic.json),
  "things" = the SceneParsing classes the instance mapping names. Stuff segments come from the
  semantic map, their area and box measured before thing instances (from the instance map) are
  painted over them; a stuff segment that things cover completely is kept (it has no pixel left in
  the PNG, and its JSON area is the semantic one).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where the work happens
    import numpy as np

import json
from pathlib import Path

from ._common import add_root_argument, bbox_of, root_from_args, run_reporting_missing

COMMAND = "ade20k-150"
HELP = "ADE20K-150 semantic PNGs and panoptic PNG+JSON from ADEChallengeData2016"
PHASES = {"val": "validation", "train": "training"}
IGNORE_LABEL = 255
INSTANCE_RELEASE = ("download the instance annotations of the SceneParsing challenge (annotations_instance.tar "
                    "from http://sceneparsing.csail.mit.edu/) into {ade}/annotations_instance, and "
                    "ade20k_instance_catid_mapping.txt (ADE20K toolkit, github.com/CSAILVision/ADE20K utils/) into {ade}")


def add_arguments(parser) -> None:
    add_root_argument(parser)
    parser.add_argument("--phases", nargs="+", default=["val"], choices=sorted(PHASES))
    parser.add_argument("--semantic-only", action="store_true", help="skip the panoptic conversion")


def read_instance_mapping(path: Path) -> dict[int, int]:
    """``ade20k_instance_catid_mapping.txt`` -> {instance-class id: SceneParsing-150 id} (1-based both;
    a header line, then whitespace-separated columns; the last row of a repeated id wins, as in the
    official preparation)."""
    mapping: dict[int, int] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 2 and cols[0].isdigit():
            mapping[int(cols[0])] = int(cols[1])
    return mapping


def panoptic_categories(thing_labels: set[int]) -> list[dict]:
    """The official ADE20K-150 panoptic categories (id 0..149, short name, colour); ``isthing`` from
    the SceneParsing ids (1-based) the instance mapping names, as the official preparation does."""
    from ..datasets.ade20k import ade150_panoptic_table

    return [{"id": c["id"], "name": c["name"], "isthing": int(c["id"] + 1 in thing_labels), "color": list(c["color"])}
            for c in ade150_panoptic_table()]


def convert_semantic(src: Path, dst: Path) -> None:
    """One SceneParsing label PNG (0 = other, 1..150) -> 0..149 with 255 = ignore."""
    import numpy as np
    from PIL import Image

    with Image.open(src) as im:
        label = np.asarray(im, dtype=np.int64)
    Image.fromarray(np.where(label == 0, IGNORE_LABEL, label - 1).astype(np.uint8)).save(dst)


def panoptic_of(semantic: "np.ndarray", instance: "np.ndarray", thing_map: dict[int, int]) -> tuple:
    """Segment-id map and segments_info of one image.

    Args:
        semantic: int [H, W] SceneParsing labels (0 = other, 1..150).
        instance: uint8 [H, W, 3] instance PNG (R = instance-class id, G = instance number).
        thing_map: instance-class id -> SceneParsing id.

    Returns:
        (int64 [H, W] segment ids (0 = void), list of segment dicts with 0-based category ids).
    """
    import numpy as np

    thing_labels = set(thing_map.values())
    seg = np.zeros(semantic.shape, dtype=np.int64)
    infos = []

    def add(mask, label):
        # area and box of the mask as annotated, before later (thing) segments paint over it
        seg[mask] = len(infos) + 1
        infos.append({"id": len(infos) + 1, "category_id": int(label) - 1, "iscrowd": 0,
                      "area": int(mask.sum()), "bbox": bbox_of(mask)})

    for label in np.unique(semantic):
        if label != 0 and int(label) not in thing_labels:
            add(semantic == label, label)
    cls, number = instance[..., 0].astype(np.int64), instance[..., 1].astype(np.int64)
    for n in np.unique(number[number > 0]):
        mask = number == n
        classes = np.unique(cls[mask])
        if len(classes) != 1 or int(classes[0]) not in thing_map:
            raise ValueError(f"instance {n} has instance classes {classes.tolist()}; expected one known class")
        add(mask, thing_map[int(classes[0])])
    return seg, infos


def prepare_ade20k_150(root: Path, phases=("val",), panoptic: bool = True) -> None:
    import numpy as np
    from panopticapi.utils import id2rgb
    from PIL import Image

    from ..datasets.ade20k import ADE_DOWNLOAD, ADE_ROOT, read_object_info
    from ..datasets.common import require

    ade = root / ADE_ROOT
    for phase in phases:
        folder = PHASES[phase]
        images, labels = ade / "images" / folder, ade / "annotations" / folder
        require("ade20k-150 input", [images, labels, ade / "objectInfo150.txt"], ADE_DOWNLOAD.format(root=root))
        read_object_info(ade / "objectInfo150.txt")  # a malformed release fails here, before any output
        sem_out = ade / "annotations_detectron2" / folder
        sem_out.mkdir(parents=True, exist_ok=True)
        label_files = sorted(labels.glob("*.png"))
        for f in label_files:
            convert_semantic(f, sem_out / f.name)
        print(f"{sem_out}: {len(label_files)} semantic PNGs")
        if not panoptic:
            continue
        inst_dir, mapping_file = ade / "annotations_instance" / folder, ade / "ade20k_instance_catid_mapping.txt"
        require("ade20k-150 panoptic input", [inst_dir, mapping_file], INSTANCE_RELEASE.format(ade=ade))
        thing_map = read_instance_mapping(mapping_file)
        thing_labels = set(thing_map.values())
        categories = panoptic_categories(thing_labels)
        pan_out = ade / f"ade20k_panoptic_{phase}"
        pan_out.mkdir(parents=True, exist_ok=True)
        json_images, json_anns = [], []
        for img in sorted(images.glob("*.jpg")):
            stem = img.stem
            with Image.open(labels / f"{stem}.png") as im:
                semantic = np.asarray(im, dtype=np.int64)
            with Image.open(inst_dir / f"{stem}.png") as im:
                instance = np.asarray(im.convert("RGB"))
            seg, infos = panoptic_of(semantic, instance, thing_map)
            Image.fromarray(id2rgb(seg)).save(pan_out / f"{stem}.png")
            json_images.append({"id": stem, "file_name": img.name, "height": seg.shape[0], "width": seg.shape[1]})
            json_anns.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": infos})
        out_json = ade / f"ade20k_panoptic_{phase}.json"
        out_json.write_text(json.dumps({"images": json_images, "annotations": json_anns, "categories": categories}),
                            encoding="utf-8")
        print(f"{out_json}: {len(json_images)} images, {sum(c['isthing'] for c in categories)} thing classes")


def registered_datasets(args) -> list[str]:
    """The registered dataset names this run makes (only the validation phase has names)."""
    if "val" not in args.phases:
        return []
    return ["ade20k_sem_seg_val"] + ([] if args.semantic_only else ["ade20k_panoptic_val"])


def main(args) -> int:
    return run_reporting_missing(COMMAND, lambda: prepare_ade20k_150(
        root_from_args(args), tuple(args.phases), panoptic=not args.semantic_only),
        args=args, datasets=registered_datasets(args))
