"""The "MaskFormer" meta-architecture: backbone + Mask2Former head + set criterion (teachers).

Training returns weighted losses; inference returns, per image, the outputs its
``MODEL.MASK_FORMER.TEST.*_ON`` switches enable at the image's original size (docs/architecture.md).
``predict_queries`` exposes the raw per-query predictions (object logits and mask logits) that
students (MaskDistill) and MasQ-Tuning build on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.catalog import MetadataCatalog
from ...utils.precision import full_precision
from ..backbone import Backbone, build_backbone
from ..losses.criterion import SetCriterion
from ..losses.matcher import HungarianMatcher
from ..postprocess import (
    instance_inference,
    panoptic_inference,
    sem_seg_postprocess,
    semantic_inference,
    upsample_mask_logits,
)
from .build import META_ARCH_REGISTRY
from .mask_former_head import MaskFormerHead

# State-dict entries that only serve the training loss (``criterion.empty_weight`` is sized by
# NUM_CLASSES): a checkpoint may lack them or size them differently without changing predictions.
LOSS_ONLY_PREFIXES = ("criterion.",)


def build_criterion(cfg) -> SetCriterion:
    """``SetCriterion`` with Hungarian matching and the loss weights expanded per auxiliary layer."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT,
                               num_points=mf.TRAIN_NUM_POINTS)
    weight_dict = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
    if mf.DEEP_SUPERVISION:
        base = dict(weight_dict)
        for i in range(mf.DEC_LAYERS - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
    return SetCriterion(num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, matcher=matcher, weight_dict=weight_dict,
                        eos_coef=mf.NO_OBJECT_WEIGHT, losses=("labels", "masks"), num_points=mf.TRAIN_NUM_POINTS,
                        oversample_ratio=mf.OVERSAMPLE_RATIO, importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO)


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask2Former with a 2-way (object / no-object) class head."""

    def __init__(self, *, backbone: Backbone, sem_seg_head: MaskFormerHead, criterion: SetCriterion,
                 num_queries: int, object_mask_threshold: float, overlap_threshold: float, thing_ids: list[int],
                 size_divisibility: int, sem_seg_postprocess_before_inference: bool, pixel_mean: list[float],
                 pixel_std: list[float], semantic_on: bool, panoptic_on: bool, instance_on: bool,
                 test_topk_per_image: int, deep_supervision: bool = True):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.num_classes = sem_seg_head.num_classes
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.thing_ids = list(thing_ids)
        self.size_divisibility = size_divisibility if size_divisibility > 0 else backbone.size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.semantic_on, self.panoptic_on, self.instance_on = semantic_on, panoptic_on, instance_on
        self.test_topk_per_image = test_topk_per_image
        self.deep_supervision = deep_supervision

    @classmethod
    def config_kwargs(cls, cfg) -> dict:
        """Constructor arguments from a config; subclasses extend the dict."""
        backbone = build_backbone(cfg)
        mf = cfg.MODEL.MASK_FORMER
        return dict(backbone=backbone, sem_seg_head=MaskFormerHead.from_config(cfg, backbone.output_shape()),
                    criterion=build_criterion(cfg), num_queries=mf.NUM_OBJECT_QUERIES,
                    size_divisibility=mf.SIZE_DIVISIBILITY, pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
                    pixel_std=list(cfg.MODEL.PIXEL_STD), deep_supervision=mf.DEEP_SUPERVISION,
                    **cls.test_time_kwargs(cfg))

    @classmethod
    def test_time_kwargs(cls, cfg) -> dict:
        """The constructor arguments only inference's post-processing reads, each stored on the model
        under its own name: a built model takes another config's with :meth:`reconfigure_for_test`."""
        mf = cfg.MODEL.MASK_FORMER
        names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
        meta = MetadataCatalog.get(names[0]) if names else {}
        return dict(object_mask_threshold=mf.TEST.OBJECT_MASK_THRESHOLD, overlap_threshold=mf.TEST.OVERLAP_THRESHOLD,
                    thing_ids=list(meta.get("thing_dataset_id_to_contiguous_id", {}).values()),
                    sem_seg_postprocess_before_inference=(mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
                                                          or mf.TEST.PANOPTIC_ON or mf.TEST.INSTANCE_ON),
                    semantic_on=mf.TEST.SEMANTIC_ON, panoptic_on=mf.TEST.PANOPTIC_ON, instance_on=mf.TEST.INSTANCE_ON,
                    test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)

    def reconfigure_for_test(self, cfg) -> None:
        """Set the post-processing from ``cfg`` as building from it would (``test_time_kwargs``)."""
        for name, value in self.test_time_kwargs(cfg).items():
            setattr(self, name, value)

    @classmethod
    def from_config(cls, cfg) -> "MaskFormer":
        return cls(**cls.config_kwargs(cfg))

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def required_weight_keys(self) -> list[str]:
        """State-dict names a checkpoint must hold for this model to predict as trained (evaluation,
        prediction): every tensor but the loss-only ones."""
        return [k for k in self.state_dict() if not k.startswith(LOSS_ONLY_PREFIXES)]

    # -- input / targets ----------------------------------------------------------------------
    def preprocess_images(self, batched_inputs: list[dict]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise and zero-pad a batch to a common size divisible by ``size_divisibility``.

        Args:
            batched_inputs: per-image dicts with "image" [3, H_i, W_i] (0-255).
        Returns:
            images [B, 3, Hp, Wp] and the unpadded sizes [(H_i, W_i)].
        """
        images = [(x["image"].to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        div = max(self.size_divisibility, 1)
        hp = -(-max(h for h, _ in sizes) // div) * div
        wp = -(-max(w for _, w in sizes) // div) * div
        batch = images[0].new_zeros((len(images), images[0].shape[0], hp, wp))
        for i, im in enumerate(images):
            batch[i, :, :im.shape[-2], :im.shape[-1]].copy_(im)
        return batch, sizes

    def prepare_targets(self, batched_inputs: list[dict], padded_size: tuple[int, int]) -> list[dict]:
        """Ground truth as the criterion wants it: labels int64 [N] and bool masks [N, Hp, Wp] (zero-padded).

        Every label is 0 when ``num_classes == 1`` (class-agnostic teachers and students).
        """
        targets = []
        for x in batched_inputs:
            inst = x["instances"]
            masks = inst.gt_masks.to(self.device)
            padded = masks.new_zeros((masks.shape[0], *padded_size), dtype=torch.bool)
            padded[:, :masks.shape[1], :masks.shape[2]] = masks.bool()
            labels = inst.gt_classes.to(self.device, dtype=torch.int64)
            if self.num_classes == 1:
                labels = torch.zeros_like(labels)
            targets.append({"labels": labels, "masks": padded})
        return targets

    # -- forward ------------------------------------------------------------------------------
    def forward(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        """Training: weighted losses {name: scalar}. Inference: one output dict per image."""
        images, sizes = self.preprocess_images(batched_inputs)
        outputs = self.sem_seg_head(self.backbone(images), aux_masks=self.training and self.deep_supervision)
        if self.training:
            if not self.deep_supervision:
                outputs.pop("aux_outputs")
            targets = self.prepare_targets(batched_inputs, tuple(images.shape[-2:]))
            return self.weighted_losses(self.criterion(outputs, targets))
        with full_precision(images):  # post-processing in fp32 under (inference) autocast
            return self.inference(outputs, batched_inputs, sizes, tuple(images.shape[-2:]))

    def weighted_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Multiply by the criterion's weight dict; losses without a weight are dropped."""
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    @torch.no_grad()
    def predict_queries(self, batched_inputs: list[dict]) -> list[dict]:
        """Raw per-query predictions, one dict per image (no post-processing, no grad).

        Returns:
            [{"pred_logits": [Q, 2] object / no-object logits (object score = softmax column 0),
              "pred_masks": [Q, Hp/4, Wp/4] mask logits over the padded batch extent,
              "image_size": (H, W) of the (augmented) input, "padded_size": (Hp, Wp)}].
        """
        images, sizes = self.preprocess_images(batched_inputs)
        outputs = self.sem_seg_head(self.backbone(images), aux_masks=False)
        padded = tuple(images.shape[-2:])
        return [{"pred_logits": logits, "pred_masks": masks, "image_size": size, "padded_size": padded}
                for logits, masks, size in zip(outputs["pred_logits"], outputs["pred_masks"], sizes)]

    def inference(self, outputs: dict, batched_inputs: list[dict], image_sizes: list[tuple[int, int]],
                  padded_size: tuple[int, int]) -> list[dict]:
        """Post-process each image's predictions to its original (height, width)."""
        results = []
        for logits, masks, x, size in zip(outputs["pred_logits"], outputs["pred_masks"], batched_inputs, image_sizes):
            probs = logits.float().softmax(-1)
            results.append(self.postprocess_low_res(probs[:, :-1], masks, padded_size=padded_size, image_size=size,
                                                    height=x.get("height", size[0]), width=x.get("width", size[1]),
                                                    valid=probs.argmax(-1) != probs.shape[-1] - 1))
        return results

    def postprocess_low_res(self, class_probs: torch.Tensor, mask_logits: torch.Tensor, *,
                            padded_size: tuple[int, int], image_size: tuple[int, int], height: int, width: int,
                            valid: torch.Tensor | None = None) -> dict:
        """``postprocess_image`` of mask logits at the model's output grid (1/4 of ``padded_size``).

        Instance-only models upsample only the kept queries' masks, a few at a time (same result
        as upsampling every mask first, without the [Q, H, W] float tensors); otherwise every
        mask is upsampled to the padded size first.

        Args:
            mask_logits: [Q, h, w]; padded_size: (Hp, Wp) of the padded batch; the rest as
                ``postprocess_image``.
        """
        if self.instance_on and not (self.semantic_on or self.panoptic_on):
            def resize(m: torch.Tensor) -> torch.Tensor:
                return upsample_mask_logits(m.float(), padded_size, image_size, height, width)

            return {"instances": instance_inference(class_probs, mask_logits, topk=self.test_topk_per_image,
                                                    resize=resize, output_size=(height, width))}
        masks = F.interpolate(mask_logits[None].float(), size=padded_size, mode="bilinear", align_corners=False)[0]
        return self.postprocess_image(class_probs, masks, image_size=image_size, height=height, width=width,
                                      valid=valid)

    def postprocess_image(self, class_probs: torch.Tensor, mask_logits: torch.Tensor, *,
                          image_size: tuple[int, int], height: int, width: int,
                          valid: torch.Tensor | None = None) -> dict:
        """The enabled TEST.*_ON outputs of one image (the shared post-processing functions).

        Args:
            class_probs: [Q, K] class probabilities, no no-object column.
            mask_logits: [Q, Hp, Wp] mask logits at the padded input resolution.
            image_size: (H, W) of the unpadded model input; height, width: the original size.
            valid: optional bool [Q]; False drops a query from panoptic inference.
        Returns:
            {"sem_seg", "panoptic_seg", "instances"} as enabled, at (height, width).
        """
        result: dict = {}
        masks = mask_logits
        if self.sem_seg_postprocess_before_inference:
            masks = sem_seg_postprocess(masks, image_size, height, width)
        masks = masks.float()
        if self.semantic_on:
            sem = semantic_inference(class_probs, masks)
            if not self.sem_seg_postprocess_before_inference:
                sem = sem_seg_postprocess(sem, image_size, height, width)
            result["sem_seg"] = sem
        if self.panoptic_on:
            result["panoptic_seg"] = panoptic_inference(
                class_probs, masks, object_mask_threshold=self.object_mask_threshold,
                overlap_threshold=self.overlap_threshold, thing_ids=self.thing_ids, valid=valid)
        if self.instance_on:
            result["instances"] = instance_inference(class_probs, masks, topk=self.test_topk_per_image,
                                                     thing_ids=self.thing_ids if self.panoptic_on else None)
        return result
