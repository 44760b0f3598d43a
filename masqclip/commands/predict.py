"""Segment one image with a trained model and any vocabulary; write a PNG overlay and a JSON of segments.

The overlay shows the image with each segment's mask in its own colour and "class score" at the
mask's centre. The JSON lists the segments: {"id", "category_id", "class", "score", "area",
"bbox" [x, y, w, h], "segmentation" (COCO RLE)}. Panoptic output is used when the model gives it,
else instances (score >= --min-score), else semantic segmentation (one segment per class present).

Vocabulary: --vocab "cat; kitty, dog" (classes separated by ';', synonyms by ',') replaces the
MasQ-Tuning model's vocabulary; default MODEL.MASQ_CLIP.VOCABULARY, else the first DATASETS.TEST
set's classes. Class-agnostic models (teachers, students) label every mask "object".

The image is resized for inference as evaluation does (shortest edge INPUT.MIN_SIZE_TEST, longest
at most INPUT.MAX_SIZE_TEST); the model's outputs are post-processed at that size and each kept
segment's mask is mapped back to the original size (nearest neighbour) one at a time, so a large
photo costs little more memory than its pixels.

example:
  masqclip predict --config-file config/models/synthetic/tuning.yaml --weights model_final.pth \\
      --image scene.png --vocab "red circle; blue star; grass" --output scene_seg.png --json scene_seg.json
"""
from __future__ import annotations

import os
import sys

from ._common import add_config_arguments, config_from_args

COMMAND = "predict"
HELP = "segment an image with any vocabulary: PNG overlay + JSON of segments"
DEFAULT_MIN_SCORE = 0.5
AGNOSTIC_NAME = "object"
OVERLAY_ALPHA = 0.5
LABEL_ALPHA = 0.8  # opacity of a label's box
LABEL_FONT_PX = 11
MIN_OVERLAY_SIDE = 384  # px: smaller images are drawn enlarged (whole-pixel factor) so labels stay legible
COLORMAP = "tab10"
BLEND_ROWS = 512  # rows blended at a time in the overlay (bounds the float copy)


def add_arguments(parser) -> None:
    parser.add_argument("--weights", required=True, metavar="FILE", help="checkpoint (sets MODEL.WEIGHTS)")
    parser.add_argument("--image", required=True, metavar="FILE", help="input image (any format PIL reads)")
    parser.add_argument("--vocab", default=None, help='class names, e.g. "cat; kitty, dog" (MasQ-Tuning models)')
    parser.add_argument("--output", required=True, metavar="PNG", help="overlay image to write")
    parser.add_argument("--json", default="", metavar="FILE", help="segments JSON (default: --output with .json)")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                        help=f"instance score threshold (default {DEFAULT_MIN_SCORE})")
    add_config_arguments(parser)


def class_names(model) -> list[str]:
    """Names of the model's category ids: a MasQ-Tuning model's ``test_vocabulary``, else "object"."""
    return list(getattr(model, "test_vocabulary", None) or [AGNOSTIC_NAME])


def extract_segments(output: dict, names: list[str], min_score: float) -> tuple[str, list[dict]]:
    """(source key, segments with a bool ``mask`` [h, w]) from one image's model output.

    The masks keep the output's size (the inference size in ``main``); ``full_size_mask`` maps one
    back to the image when it is drawn or encoded.
    """
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


def full_size_mask(mask, size: tuple[int, int]):
    """bool numpy [H, W]: ``mask`` (bool [h, w], tensor or array) resized to ``size`` by nearest neighbour
    (pixel centres, as label maps are resized for training); no float copy at the large size."""
    import numpy as np

    from ..data.transforms import _nearest_index

    mask = mask.numpy() if hasattr(mask, "numpy") else np.asarray(mask)
    if tuple(mask.shape) == tuple(size):
        return mask.astype(bool, copy=False)
    ys = _nearest_index(mask.shape[0], size[0])
    xs = _nearest_index(mask.shape[1], size[1])
    return mask.astype(bool, copy=False)[ys][:, xs]


def segments_to_json(segments: list[dict], size: tuple[int, int] | None = None) -> list[dict]:
    """Segments with their masks as COCO RLE (and area, bbox) at ``size`` (default: the masks' own), by score."""
    import numpy as np
    from pycocotools import mask as mask_utils

    out = []
    for i, seg in enumerate(sorted(segments, key=lambda s: -s["score"]), start=1):
        mask = full_size_mask(seg["mask"], size or tuple(seg["mask"].shape))
        rle = mask_utils.encode(np.asfortranarray(mask.view(np.uint8)))
        del mask
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"id": i, "category_id": seg["category_id"], "class": seg["class"],
                    "score": round(seg["score"], 4), "area": int(mask_utils.area(rle)),
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)], "segmentation": rle})
    return out


def _label_position(mask, size: tuple[int, int]) -> tuple[float, float] | None:
    """(x, y) of a mask's centroid in the pixels of an image of ``size``, computed at the mask's own size."""
    import numpy as np

    small = mask.numpy() if hasattr(mask, "numpy") else np.asarray(mask)
    ys, xs = np.nonzero(small)
    if not len(ys):
        return None
    sy, sx = size[0] / small.shape[0], size[1] / small.shape[1]
    return float((xs.mean() + 0.5) * sx - 0.5), float((ys.mean() + 0.5) * sy - 0.5)


def draw_overlay(image, segments: list[dict], path: str) -> None:
    """Write ``image`` (uint8 [H, W, 3]) with coloured masks and "class score" labels to ``path``.

    Masks of another size than the image are mapped to it (nearest neighbour). Images with a side
    below ``MIN_OVERLAY_SIDE`` are enlarged by the smallest whole factor that reaches it (nearest
    neighbour: each pixel becomes a block). Blending works in bands of rows and the labels are drawn
    with PIL on the uint8 pixels, so memory stays a small multiple of the image's own.
    """
    import matplotlib
    import numpy as np
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    factor = max(1, -(-MIN_OVERLAY_SIDE // min(image.shape[:2])))  # ceil division
    size = (image.shape[0], image.shape[1])
    h = size[0] * factor
    colors = matplotlib.colormaps[COLORMAP]
    blended = image.repeat(factor, 0).repeat(factor, 1) if factor > 1 else image.copy()
    labels = []
    for k, seg in enumerate(segments):
        position = _label_position(seg["mask"], size)
        if position is None:
            continue
        color = np.asarray(colors(k % colors.N)[:3], dtype=np.float32)
        mask = full_size_mask(seg["mask"], size)
        if factor > 1:
            mask = mask.repeat(factor, 0).repeat(factor, 1)
        tint = OVERLAY_ALPHA * 255.0 * color
        for y0 in range(0, h, BLEND_ROWS):
            band, part = blended[y0:y0 + BLEND_ROWS], mask[y0:y0 + BLEND_ROWS]
            if not part.any():
                continue
            mixed = band.astype(np.float32)
            mixed *= 1 - OVERLAY_ALPHA
            mixed += tint
            np.copyto(band, np.rint(mixed).astype(np.uint8), where=part[..., None])
        del mask
        labels.append(((position[0] + 0.5) * factor - 0.5, (position[1] + 0.5) * factor - 0.5,
                       f"{seg['class']} {seg['score']:.2f}", tuple(int(round(255 * c)) for c in color)))
    canvas = Image.fromarray(blended)
    del blended
    draw = ImageDraw.Draw(canvas, "RGBA")
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), LABEL_FONT_PX)
    for x, y, text, rgb in labels:
        left, top, right, bottom = draw.textbbox((x, y), text, font=font, anchor="mm")
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(*rgb, int(255 * LABEL_ALPHA)))
        draw.text((x, y), text, font=font, anchor="mm", fill=(255, 255, 255))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)


def read_input_image(path: str):
    """uint8 [H, W, 3] of ``path``; a missing, unreadable or non-image file is a ``UserError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    from ..data.mapper import read_image
    from ..errors import UserError, UserFileNotFoundError

    if not os.path.exists(path):
        raise UserFileNotFoundError(f"image not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"--image {path} is a directory, not an image file")
    try:
        return read_image(path)
    except UnidentifiedImageError:
        raise UserError(f"cannot read {path}: not an image format PIL knows") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None


def inference_input(cfg, image) -> dict:
    """The model input of ``image`` resized as evaluation resizes (``ResizeShortestEdge``), with
    ``height``/``width`` set to that size: the outputs come back at the inference size."""
    from ..data.mapper import _to_chw
    from ..data.transforms import ResizeShortestEdge

    tf = ResizeShortestEdge.from_config(cfg)(image.shape[:2])
    resized = tf.apply_image(image)
    return {"image": _to_chw(resized), "height": resized.shape[0], "width": resized.shape[1]}


def main(args) -> int:
    import json

    import torch

    from ..engine.checkpointer import load_model_weights
    from ..errors import UserError
    from ..modeling import build_model
    from ..modeling.clip.text import parse_vocabulary
    from ..modeling.bf16 import apply_test_precision
    from ..utils.logger import setup_logger
    from ..utils.precision import amp_from_config

    setup_logger()
    cfg = config_from_args(args, freeze=False)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.freeze()
    if args.vocab is not None:
        try:
            parse_vocabulary(args.vocab)
        except ValueError:
            raise UserError(f"--vocab {args.vocab!r} names no class (classes are separated by ';', "
                            "synonyms by ',')") from None
    image = read_input_image(args.image)  # before the model is built: a wrong path fails at once
    model = build_model(cfg)
    load_model_weights(model, args.weights, strict=True)
    if args.vocab is not None:
        if not hasattr(model, "set_vocabulary"):
            raise UserError(f"--vocab needs a MasQTuning model, not {cfg.MODEL.META_ARCHITECTURE}")
        model.set_vocabulary(args.vocab)
    elif hasattr(model, "set_vocabulary") and not model.test_vocabulary:
        raise UserError("no vocabulary: pass --vocab, set MODEL.MASQ_CLIP.VOCABULARY, or name a registered "
                        "dataset in DATASETS.TEST")
    names = class_names(model)
    height, width = image.shape[:2]
    apply_test_precision(cfg, model)
    amp = amp_from_config(cfg, next(model.parameters()).device, inference=True)
    if amp.notice:
        print(amp.notice, file=sys.stderr)
    model.eval()
    with torch.no_grad(), amp.autocast():
        output = model([inference_input(cfg, image)])[0]
    source, segments = extract_segments(output, names, args.min_score)
    del output
    draw_overlay(image, segments, args.output)
    json_path = args.json or os.path.splitext(args.output)[0] + ".json"
    with open(json_path, "w", encoding="utf-8") as fh:
        json.dump({"image": args.image, "height": height, "width": width, "source": source,
                   "classes": names, "segments": segments_to_json(segments, (height, width))}, fh, indent=2)
    print(f"{len(segments)} segments ({source}) -> {args.output}, {json_path}")
    return 0
