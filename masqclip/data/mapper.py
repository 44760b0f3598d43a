"""Dataset records -> model inputs (docs/architecture.md, "Model input").

One mapper serves every record kind, choosing by the fields a record has (not by dataset name):
``annotations`` (COCO instances, RLE or polygons), ``segments_info`` + ``pan_seg_file_name``
(panoptic: every non-crowd segment, thing or stuff, becomes an instance) and ``sem_seg_file_name``
(semantic labels; without instance annotations, one instance per class present, as Mask2Former's
semantic mapper). Training applies a sampled ``GeometricTransform`` (LSJ) to image and labels alike
and removes instances left empty; testing resizes the image only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from panopticapi.utils import rgb2id
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils

from ..structures import Instances
from .transforms import LSJ, GeometricTransform, ResizeShortestEdge


def read_image(path: str) -> np.ndarray:
    """uint8 [H, W, 3] RGB, upright per the file's EXIF orientation (as detectron2 reads images)."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def read_label_png(path: str) -> np.ndarray:
    """The raw values of a label image: [H, W] (semantic ids) or [H, W, 3] (panoptic RGB)."""
    with Image.open(path) as im:
        return np.asarray(im)


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """bool [H, W] from a COCO segmentation (RLE dict, uncompressed RLE or polygon list)."""
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(bool)


def record_targets(record: dict, ignore_label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The ground truth of a record at its original size.

    Returns:
        masks bool [N, H, W], classes int64 [N] (contiguous ids), sem_seg [H, W] or ``None``.
    """
    h, w = record["height"], record["width"]
    sem_seg = None
    if "sem_seg_file_name" in record:
        sem_seg = read_label_png(record["sem_seg_file_name"]).astype(np.int64)
    if "annotations" in record:
        anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
        masks = [decode_segmentation(a["segmentation"], h, w) for a in anns]
        classes = [a["category_id"] for a in anns]
    elif "segments_info" in record:
        ids = rgb2id(read_label_png(record["pan_seg_file_name"]))
        segs = [s for s in record["segments_info"] if not s.get("iscrowd", 0)]
        masks = [ids == s["id"] for s in segs]
        classes = [s["category_id"] for s in segs]
    elif sem_seg is not None:
        classes = [int(c) for c in np.unique(sem_seg) if c != ignore_label]
        masks = [sem_seg == c for c in classes]
    else:
        masks, classes = [], []
    masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return masks, np.asarray(classes, dtype=np.int64), sem_seg


class DatasetMapper:
    """Callable ``(record, rng) -> model input dict`` (see the module docstring).

    Args:
        is_train: training (augment, targets) or testing (resize, no targets).
        train_augment: samples the training ``GeometricTransform`` from (rng, (h, w)).
        test_resize: gives the test ``GeometricTransform`` for (h, w).
        image_pad_value: image fill outside the resized image.
        ignore_label: sem_seg fill and the "no class" value of semantic labels.
    """

    def __init__(self, *, is_train: bool,
                 train_augment: Callable[[np.random.Generator, tuple[int, int]], GeometricTransform] | None = None,
                 test_resize: Callable[[tuple[int, int]], GeometricTransform] | None = None,
                 image_pad_value: float = 0.0, ignore_label: int = 255):
        if is_train and train_augment is None:
            raise ValueError("a training mapper needs train_augment")
        self.is_train = is_train
        self.train_augment = train_augment
        self.test_resize = test_resize
        self.image_pad_value = image_pad_value
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool) -> "DatasetMapper":
        return cls(is_train=is_train, train_augment=LSJ.from_config(cfg) if is_train else None,
                   test_resize=ResizeShortestEdge.from_config(cfg), image_pad_value=cfg.INPUT.LSJ_PAD_VALUE,
                   ignore_label=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
        """Args:
            record: a catalog record (file_name, image_id, height, width + annotations).
            rng: the randomness of this sample's augmentation (required when training).
        Returns:
            ``{"image": uint8 [3, H', W'], "height", "width", "file_name", "image_id"}`` plus, when
            training, ``"instances"`` (gt_classes int64 [N], gt_masks bool [N, H', W']) and, when the
            record has semantic labels, ``"sem_seg"`` int64 [H', W']; testing keeps the record's
            other fields (for evaluators).
        """
        image = read_image(record["file_name"])
        if image.shape[:2] != (record["height"], record["width"]):
            raise ValueError(f"{record['file_name']}: image is {image.shape[:2]}, record says "
                             f"{(record['height'], record['width'])}")
        if not self.is_train:
            tf = self.test_resize(image.shape[:2]) if self.test_resize else None
            out = dict(record)
            out["image"] = _to_chw(tf.apply_image(image) if tf else image)
            return out
        if rng is None:
            raise ValueError("a training mapper needs the sample's rng")
        tf = self.train_augment(rng, image.shape[:2])
        masks, classes, sem_seg = record_targets(record, self.ignore_label)
        image = tf.apply_image(image, self.image_pad_value)
        masks = tf.apply_labels(masks, 0)
        keep = masks.any(axis=(1, 2))
        out = {"image": _to_chw(image), "height": record["height"], "width": record["width"],
               "file_name": record["file_name"], "image_id": record["image_id"],
               "instances": Instances(image.shape[:2], gt_classes=torch.from_numpy(classes[keep]),
                                      gt_masks=torch.from_numpy(np.ascontiguousarray(masks[keep])))}
        if sem_seg is not None:
            out["sem_seg"] = torch.from_numpy(tf.apply_labels(sem_seg, self.ignore_label))
        return out


def _to_chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
