"""Segment one image with a trained model and any vocabulary; write a PNG overlay and a JSON of segments.

The overlay shows the image with each segment's mask in its own colour and "class score" at the
mask's centre. The JSON lists the segments: {"id", "category_id", "class", "score", "area",
"bbox" [x, y, w, h], "segmentation" (COCO RLE)}. Panoptic output is used when the model gives it,
else instances (score >= --min-score), else semantic segmentation (one segment per class present).

Vocabulary: --vocab "cat; kitty, dog" (classes separated by ';', synonyms by ',') replaces the
MasQ-Tuning model's vocabulary; default MODEL.MASQ_CLIP.VOCABULARY, else the first DATASETS.TEST
set's classes. Class-agnostic models (teachers, students) label every mask "object".

example:
  masqclip predict --config-file config/models/synthetic/masqclip.yaml --weights model_final.pth \\
      --image scene.png --vocab "red circle; blue star; grass" --output scene_seg.png --json scene_seg.json
"""
from __future__ import annotations

import os

from ._common import add_config_arguments, config_from_args

COMMAND = "predict"
HELP = "segment an image with any vocabulary: PNG overlay + JSON of segments"
DEFAULT_MIN_SCORE = 0.5
AGNOSTIC_NAME = "object"
OVERLAY_ALPHA = 0.5
FIGURE_DPI = 100
MIN_OVERLAY_SIDE = 384  # px: smaller images are drawn enlarged (whole-pixel factor) so labels stay legible
COLORMAP = "tab10"


def add_arguments(parser) -> None:
    parser.add_argument("--weights", required=True, metavar="FILE", help="checkpoint (sets MODEL.WEIGHTS)")
    parser.add_argument("--image", required=True, metavar="FILE", help="input image (any format PIL reads)")
    parser.add_argument("--vocab", default="", help='class names, e.g. "cat; kitty, dog" (MasQ-Tuning models)')
    parser.add_argument("--output", required=True, metavar="PNG", help="overlay image to write")
    parser.add_argument("--json", default="", metavar="FILE", help="segments JSON (default: --output with .json)")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                        help=f"instance score threshold (default {DEFAULT_MIN_SCORE})")
    add_config_arguments(parser)


def class_names(model) -> list[str]:
    """Names of the model's category ids: a MasQ-Tuning model's ``test_vocabulary``, else "object"."""
    return list(getattr(model, "test_vocabulary", None) or [AGNOSTIC_NAME])


def extract_segments(output: dict, names: list[str], min_score: float) -> tuple[str, list[dict]]:
    """(source key, segments with a bool ``mask`` [H, W]) from one image's model output."""
    import torch

    def name_of(c: int) -> str:
        return names[c].split(",")[0].strip() if 0 <= c < len(names) else str(c)

    segments = []
    if "panoptic_seg" in output:
        seg, infos = output["panoptic_seg"]
        for info in infos:
            c = int(info["category_id"])
            segments.append({"category_id": c, "class": name_of(c), "score": float(info.get("score", 1.0)),
                             "mask": (seg == info["id"]).cpu()})
        return "panoptic_seg", segments
    if "instances" in output:
        inst = output["instances"]
        for mask, c, s in zip(inst.pred_masks, inst.pred_classes.tolist(), inst.scores.tolist()):
            if s >= min_score:
                segments.append({"category_id": c, "class": name_of(c), "score": s, "mask": mask.bool().cpu()})
        return "instances", segments
    if "sem_seg" in output:
        probs = output["sem_seg"].float()
        labels = probs.argmax(0)
        for c in torch.unique(labels).tolist():
            mask = labels == c
            segments.append({"category_id": c, "class": name_of(c), "score": float(probs[c][mask].mean()),
                             "mask": mask.cpu()})
        return "sem_seg", segments
    raise ValueError(f"the model output has none of panoptic_seg / instances / sem_seg: {sorted(output)}")


def segments_to_json(segments: list[dict]) -> list[dict]:
    """Segments with their masks as COCO RLE (and area, bbox), sorted by score."""
    import numpy as np
    from pycocotools import mask as mask_utils

    out = []
    for i, seg in enumerate(sorted(segments, key=lambda s: -s["score"]), start=1):
        rle = mask_utils.encode(np.asfortranarray(seg["mask"].numpy().astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"id": i, "category_id": seg["category_id"], "class": seg["class"],
                    "score": round(seg["score"], 4), "area": int(mask_utils.area(rle)),
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)], "segmentation": rle})
    return out


def draw_overlay(image, segments: list[dict], path: str) -> None:
    """Write ``image`` (uint8 [H, W, 3]) with coloured masks and "class score" labels to ``path``.

    Images with a side below ``MIN_OVERLAY_SIDE`` are enlarged by the smallest whole factor that
    reaches it (nearest neighbour: each pixel becomes a block).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    factor = max(1, -(-MIN_OVERLAY_SIDE // min(image.shape[:2])))  # ceil division
    h, w = image.shape[0] * factor, image.shape[1] * factor
    colors = matplotlib.colormaps[COLORMAP]
    blended = image.astype(np.float32).repeat(factor, 0).repeat(factor, 1) / 255.0
    fig = plt.figure(figsize=(w / FIGURE_DPI, h / FIGURE_DPI), dpi=FIGURE_DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    for k, seg in enumerate(segments):
        mask = seg["mask"].numpy().repeat(factor, 0).repeat(factor, 1)
        if not mask.any():
            continue
        color = np.asarray(colors(k % colors.N)[:3], dtype=np.float32)
        blended[mask] = (1 - OVERLAY_ALPHA) * blended[mask] + OVERLAY_ALPHA * color
        ys, xs = np.nonzero(mask)
        ax.text(float(xs.mean()), float(ys.mean()), f"{seg['class']} {seg['score']:.2f}", fontsize=8,
                ha="center", va="center", color="white", bbox={"facecolor": color, "alpha": 0.8, "pad": 1,
                                                               "edgecolor": "none"})
    ax.imshow(blended, interpolation="nearest")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def main(args) -> int:
    import json

    import torch

    from ..engine.checkpointer import load_model_weights
    from ..data.mapper import DatasetMapper, read_image
    from ..modeling import build_model
    from ..utils.logger import setup_logger

    setup_logger()
    cfg = config_from_args(args, freeze=False)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.freeze()
    model = build_model(cfg)
    load_model_weights(model, args.weights)
    if args.vocab:
        if not hasattr(model, "set_vocabulary"):
            raise SystemExit(f"masqclip predict: --vocab needs a MasQTuning model, not {cfg.MODEL.META_ARCHITECTURE}")
        model.set_vocabulary(args.vocab)
    names = class_names(model)
    image = read_image(args.image)
    record = {"file_name": args.image, "image_id": os.path.basename(args.image),
              "height": image.shape[0], "width": image.shape[1]}
    model.eval()
    with torch.no_grad():
        output = model([DatasetMapper.from_config(cfg, is_train=False)(record)])[0]
    source, segments = extract_segments(output, names, args.min_score)
    draw_overlay(image, segments, args.output)
    json_path = args.json or os.path.splitext(args.output)[0] + ".json"
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump({"image": args.image, "height": record["height"], "width": record["width"], "source": source,
                   "classes": names, "segments": segments_to_json(segments)}, fh, indent=2)
    print(f"{len(segments)} segments ({source}) -> {args.output}, {json_path}")
    return 0
