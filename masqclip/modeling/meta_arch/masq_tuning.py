"""The "MasQTuning" meta-architecture: frozen mask generator + CLIP mask class tokens
(docs/method.md#stage-c-masq-tuning).

- ``backbone`` / ``sem_seg_head``: a frozen class-agnostic Mask2Former (always in eval mode) that
  proposes Q masks with object scores; ``criterion`` is kept only so the state dict has the
  official names (its ``empty_weight`` has NUM_CLASSES + 1 entries).
- ``masqclip``: ``MasQCLIP`` (the CLIP vision tower with mask class tokens). The CLIP branch sees
  the unnormalised padded batch / 255, bicubically resized to CLIP's square input size and
  normalised with CLIP's mean/std; the mask logits (over the same padded extent) decide what each
  mask token sees.
- Logits: ``LOGIT_SCALE * cos(mask embedding, text embeddings of vocabulary + "background")``;
  ``LOGIT_SCALE <= 0`` takes the CLIP model's own learned scale (exp of its ``logit_scale``: 100 for
  OpenAI's weights, the paper's value; ~17 for the synthetic world's tiny CLIP).
- Training: each predicted mask takes the label of the ground-truth mask with the best smoothed
  dice (prediction bilinearly resized to TRAIN_MASK_SIZE^2 and binarised at sigmoid > 0.5, ground
  truth resized to the same size by nearest interpolation) if that dice is > LABEL_DICE_THRESHOLD,
  else "background"; loss = MASK_FORMER.CLASS_WEIGHT x the class-weighted NLL of the log-softmax
  of the logits (weight 1 per class, MASK_FORMER.NO_OBJECT_WEIGHT for "background"; a weighted
  mean, as ``F.cross_entropy`` with weights). Only the new query projections and the mask
  embedding learn.
- Inference: log p(class) = log p_obj (USE_OBJECT_SCORE) + log-softmax(logits), background dropped,
  then the shared post-processing (``modeling/postprocess.py``) with the config's thresholds; a
  query whose CLIP argmax is "background" still competes in panoptic inference when its fused
  score passes the object-mask threshold.

Vocabularies: MODEL.MASQ_CLIP.VOCABULARY when given, else the dataset metadata (``stuff_classes``
when present, else ``thing_classes``) of DATASETS.TRAIN[0] for training and DATASETS.TEST[0] for
inference. ``set_vocabulary(names, thing_ids)`` switches the inference vocabulary at any time;
text embeddings come from ``clip.text.TextEmbedder`` (disk-cached) and the text tower is not part
of the module tree (nor of checkpoints).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ...checkpoint import CheckpointError, read_checkpoint
from ...utils.precision import full_precision
from ...data.catalog import MetadataCatalog
from ..clip import MasQCLIP, clip_mean_std, create_clip_from_config
from ..clip.text import TextEmbedder
from ..postprocess import object_scores
from .build import META_ARCH_REGISTRY
from .mask_former import MaskFormer

__all__ = ["MasQTuning", "assign_mask_labels", "vocabulary_from_metadata"]

MASK_GENERATOR_PREFIXES = ("backbone.", "sem_seg_head.")
LOSS_KEY = "loss_masq_ce"
PIXEL_RANGE = 255.0  # the CLIP branch sees input / PIXEL_RANGE
LABEL_DICE_SMOOTH = 1.0  # the "+ 1" of the label assignment's smoothed dice


def vocabulary_from_metadata(dataset_name: str) -> tuple[list[str], list[int]]:
    """(class names in contiguous order, contiguous thing ids) of a registered dataset."""
    meta = MetadataCatalog.get(dataset_name)
    names = meta.get("stuff_classes") or meta.get("thing_classes")
    if not names:
        raise KeyError(f"dataset {dataset_name!r} has neither stuff_classes nor thing_classes in its metadata; "
                       "register it or set MODEL.MASQ_CLIP.VOCABULARY")
    return list(names), list(meta.get("thing_dataset_id_to_contiguous_id", {}).values())


def assign_mask_labels(pred_mask_logits: torch.Tensor, gt_masks: torch.Tensor, gt_classes: torch.Tensor, *,
                       background: int, dice_threshold: float, size: int) -> torch.Tensor:
    """Label of each predicted mask: the class of its best-dice ground truth, or background.

    Args:
        pred_mask_logits: float [Q, h, w] mask logits over the padded extent.
        gt_masks: bool [N, Hp, Wp] ground truth over the same extent.
        gt_classes: int64 [N] contiguous class ids.
        background: label for unmatched masks (the vocabulary size K).
        dice_threshold: a match needs smoothed dice ``(2|A n B| + 1) / (|A| + |B| + 1)`` > this.
        size: predictions are resized bilinearly (then binarised at sigmoid > 0.5), ground truth
            by nearest interpolation, to size x size before comparing.

    Returns:
        int64 [Q] labels in [0, K].
    """
    q = pred_mask_logits.shape[0]
    labels = torch.full((q,), background, dtype=torch.int64, device=pred_mask_logits.device)
    if gt_masks.shape[0] == 0:
        return labels
    pred = F.interpolate(pred_mask_logits[None].float(), size=(size, size), mode="bilinear",
                         align_corners=False)[0].sigmoid().gt(0.5).flatten(1).float()
    gt = F.interpolate(gt_masks[None].float(), size=(size, size), mode="nearest")[0].gt(0.5).flatten(1).float()
    inter = pred @ gt.t()
    dice = (2 * inter + LABEL_DICE_SMOOTH) / (pred.sum(1, keepdim=True) + gt.sum(1)[None] + LABEL_DICE_SMOOTH)
    best, index = dice.max(dim=1)
    matched = best > dice_threshold
    labels[matched] = gt_classes.to(labels.device)[index[matched]]
    return labels


@META_ARCH_REGISTRY.register()
class MasQTuning(MaskFormer):
    """Open-vocabulary segmentation: frozen mask proposals classified by CLIP mask class tokens."""

    def __init__(self, *, masqclip: MasQCLIP, text_embedder: TextEmbedder, clip_mean: Sequence[float],
                 clip_std: Sequence[float], logit_scale: float, label_dice_threshold: float, train_mask_size: int,
                 use_object_score: bool, no_object_weight: float = 0.1, class_weight: float = 2.0,
                 train_vocabulary: Sequence[str] | None = None,
                 test_vocabulary: Sequence[str] | None = None, fixed_vocabulary: bool = False, **kwargs):
        """
        Args:
            masqclip: the CLIP vision tower with mask class tokens.
            text_embedder: vocabulary -> float [K + 1, D] text embeddings ("background" last).
            clip_mean, clip_std: CLIP's input normalisation (0-1 scale).
            logit_scale: multiplies cosine similarities.
            label_dice_threshold: training label assignment needs dice > this.
            train_mask_size: masks are compared at this square size for label assignment.
            use_object_score: add log p_obj to the CLIP log-probabilities at inference.
            no_object_weight: NLL class weight of "background" (every class weighs 1).
            class_weight: multiplies the weighted NLL.
            train_vocabulary / test_vocabulary: class names (synonyms ", "-separated); None = set later.
            fixed_vocabulary: the user gave the vocabulary (MODEL.MASQ_CLIP.VOCABULARY): dataset
                vocabularies never replace it.
            **kwargs: ``MaskFormer``'s constructor arguments (the mask generator).
        """
        super().__init__(**kwargs)
        self.masqclip = masqclip
        self.__dict__["text_embedder"] = text_embedder  # plain attribute: not a submodule
        self.register_buffer("clip_mean", torch.tensor(list(clip_mean)).view(-1, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(list(clip_std)).view(-1, 1, 1), persistent=False)
        self.logit_scale = logit_scale
        self.label_dice_threshold = label_dice_threshold
        self.train_mask_size = train_mask_size
        self.use_object_score = use_object_score
        self.no_object_weight = no_object_weight
        self.class_weight = class_weight
        self.train_vocabulary = list(train_vocabulary) if train_vocabulary else None
        self.test_vocabulary = list(test_vocabulary) if test_vocabulary else None
        self.fixed_vocabulary = fixed_vocabulary
        self._embedding_memo: dict[tuple[str, ...], torch.Tensor] = {}
        for module in (self.backbone, self.sem_seg_head, self.criterion):
            module.requires_grad_(False)
        self.train(self.training)

    @classmethod
    def config_kwargs(cls, cfg) -> dict:
        kwargs = super().config_kwargs(cfg)
        mc = cfg.MODEL.MASQ_CLIP
        clip = create_clip_from_config(cfg)
        mean, std = clip_mean_std(clip)
        masqclip = MasQCLIP(visual=clip.visual, new_q_init=mc.NEW_Q_INIT, tuning=mc.TUNING)
        clip.visual = None  # the text tower stays with the embedder; the vision tower is masqclip's
        embedder = TextEmbedder.from_clip(clip, model_name=mc.MODEL_NAME, pretrained=mc.PRETRAINED,
                                          cache_dir=mc.TEXT_CACHE_DIR or None)
        vocab = list(mc.VOCABULARY)
        train_vocab = vocab or _dataset_vocabulary(cfg.DATASETS.TRAIN)
        kwargs.update(masqclip=masqclip, text_embedder=embedder, clip_mean=mean, clip_std=std,
                      logit_scale=resolve_logit_scale(mc.LOGIT_SCALE, clip), label_dice_threshold=mc.LABEL_DICE_THRESHOLD,
                      train_mask_size=mc.TRAIN_MASK_SIZE, no_object_weight=cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT,
                      class_weight=cfg.MODEL.MASK_FORMER.CLASS_WEIGHT,
                      train_vocabulary=train_vocab, fixed_vocabulary=bool(vocab))
        return kwargs

    @classmethod
    def test_time_kwargs(cls, cfg) -> dict:
        mc = cfg.MODEL.MASQ_CLIP
        test_vocab = list(mc.VOCABULARY) or _dataset_vocabulary(cfg.DATASETS.TEST)
        return dict(super().test_time_kwargs(cfg), use_object_score=mc.USE_OBJECT_SCORE,
                    test_vocabulary=list(test_vocab) if test_vocab else None)

    # -- modes, weights, vocabularies ---------------------------------------------------------
    def train(self, mode: bool = True) -> "MasQTuning":
        """Only the mask tokens' parameters ever train: the mask generator and CLIP stay in eval mode."""
        super().train(mode)
        for module in (self.backbone, self.sem_seg_head, self.masqclip):
            module.eval()
        return self

    # MODEL.WEIGHTS must hold the frozen mask generator even when training starts: tuning CLIP on a
    # random generator's masks is never intended (the CLIP weights come from MODEL.MASQ_CLIP.PRETRAINED).
    requires_weights_for_training = True

    def required_weight_keys(self) -> list[str]:
        """The frozen mask generator's names: a teacher/student checkpoint is enough; the CLIP tower
        keeps the weights it was built with unless the checkpoint has its tuned ones."""
        return [k for k in self.state_dict() if k.startswith(MASK_GENERATOR_PREFIXES)]

    def load_mask_generator(self, path: str) -> None:
        """Load ``backbone.*`` and ``sem_seg_head.*`` from a teacher/student checkpoint (strictly:
        ``CheckpointError`` names missing tensors and shape mismatches)."""
        from ...checkpoint.io import abbreviate, group_keys

        own = {k: v for k, v in self.state_dict().items() if k.startswith(MASK_GENERATOR_PREFIXES)}
        state = read_checkpoint(path)["model"]
        subset = {k: v for k, v in state.items() if k in own}
        absent = sorted(set(own) - set(subset))
        if absent:
            raise CheckpointError(f"{path} lacks {len(absent)} of the {len(own)} mask generator tensors: "
                                  f"{abbreviate(group_keys(absent))}")
        wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in subset.items()
                 if tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise CheckpointError(f"{path}: {len(wrong)} shape mismatch(es): {abbreviate(wrong)}")
        self.load_state_dict(subset, strict=False)

    def set_vocabulary(self, names: Sequence[str] | str, thing_ids: Sequence[int] | None = None) -> None:
        """Switch the inference vocabulary (and the contiguous thing ids used by panoptic/instance)."""
        from ..clip.text import parse_vocabulary

        self.test_vocabulary = [", ".join(syn) for syn in parse_vocabulary(names)]
        if thing_ids is not None:
            self.thing_ids = list(thing_ids)

    def set_dataset_vocabulary(self, dataset_name: str) -> None:
        """Inference vocabulary and thing ids of a registered dataset (no-op with a fixed vocabulary)."""
        if not self.fixed_vocabulary:
            self.set_vocabulary(*vocabulary_from_metadata(dataset_name))

    def text_embeddings(self, vocabulary: Sequence[str] | None) -> torch.Tensor:
        """float [K + 1, D] on the model's device ("background" last), memoised per vocabulary."""
        if not vocabulary:
            raise RuntimeError("MasQTuning has no vocabulary: set MODEL.MASQ_CLIP.VOCABULARY, register the "
                               "dataset's metadata, or call set_vocabulary(names)")
        key = tuple(vocabulary)
        if key not in self._embedding_memo:
            self._embedding_memo[key] = self.text_embedder(list(vocabulary))
        return self._embedding_memo[key].to(self.device)

    # -- forward ------------------------------------------------------------------------------
    def clip_images(self, batched_inputs: list[dict], padded_size: tuple[int, int]) -> torch.Tensor:
        """The CLIP branch input: float [B, 3, S, S] from the zero-padded 0-255 batch."""
        raw = torch.zeros(len(batched_inputs), 3, *padded_size, device=self.device)
        for i, x in enumerate(batched_inputs):
            image = x["image"].to(self.device).float()
            raw[i, :, :image.shape[-2], :image.shape[-1]] = image
        x = F.interpolate(raw / PIXEL_RANGE, size=self.masqclip.image_size, mode="bicubic", align_corners=False)
        return (x - self.clip_mean) / self.clip_std

    def clip_logits(self, batched_inputs: list[dict], preds: list[dict], vocabulary) -> torch.Tensor:
        """float [B, Q, K + 1] scaled cosine similarities of mask tokens with the vocabulary + background."""
        images = self.clip_images(batched_inputs, preds[0]["padded_size"])
        masks = torch.stack([p["pred_masks"] for p in preds])
        tokens = self.masqclip(images, masks.float())
        with full_precision(tokens):  # CLIP logits (and the NLL / class scores after them) in fp32
            return self.logit_scale * tokens.float() @ self.text_embeddings(vocabulary).t().float()

    def forward(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        """Training: {"loss_masq_ce": scalar}. Inference: one output dict per image."""
        preds = self.predict_queries(batched_inputs)
        vocabulary = self.train_vocabulary if self.training else self.test_vocabulary
        logits = self.clip_logits(batched_inputs, preds, vocabulary)
        if self.training:
            return {LOSS_KEY: self.losses(logits, preds, batched_inputs)}
        with full_precision(logits):  # post-processing in fp32 under (inference) autocast
            return self.classify_and_postprocess(logits, preds, batched_inputs)

    def losses(self, logits: torch.Tensor, preds: list[dict], batched_inputs: list[dict]) -> torch.Tensor:
        """``class_weight`` x the class-weighted NLL of the assigned labels under log-softmax(logits
        [B, Q, K + 1]): weights 1 for the K classes and ``no_object_weight`` for background, a
        weighted mean (``F.nll_loss`` with class weights; with NUM_CLASSES = K these are the
        criterion's ``empty_weight``)."""
        background = logits.shape[-1] - 1
        labels = []
        for pred, x in zip(preds, batched_inputs):
            inst = x["instances"]
            gt = inst.gt_masks.to(self.device).bool()
            padded = gt.new_zeros((gt.shape[0], *pred["padded_size"]))
            padded[:, :gt.shape[1], :gt.shape[2]] = gt
            mask_logits = F.interpolate(pred["pred_masks"][None].float(), size=pred["padded_size"], mode="bilinear",
                                        align_corners=False)[0]
            labels.append(assign_mask_labels(mask_logits, padded, inst.gt_classes, background=background,
                                             dice_threshold=self.label_dice_threshold, size=self.train_mask_size))
        weight = logits.new_ones(logits.shape[-1], dtype=torch.float32)
        weight[background] = self.no_object_weight
        with full_precision(logits):  # the loss of the CLIP logits in fp32 under autocast
            nll = F.nll_loss(logits.float().log_softmax(-1).flatten(0, 1), torch.cat(labels), weight=weight)
        return self.class_weight * nll

    def class_probabilities(self, logits: torch.Tensor, pred_logits: torch.Tensor) -> torch.Tensor:
        """p(class) [Q, K] = exp(log p_obj + log-softmax(logits)[:, :K]) (object score optional).

        Args:
            logits: float [Q, K + 1] CLIP logits; pred_logits: float [Q, 2] object / no-object logits.
        """
        log_p = logits.float().log_softmax(-1)[:, :-1]
        if self.use_object_score:
            log_p = log_p + object_scores(pred_logits).clamp(min=torch.finfo(torch.float32).tiny).log()[:, None]
        return log_p.exp()

    def classify_and_postprocess(self, logits: torch.Tensor, preds: list[dict], batched_inputs: list[dict]) -> list[dict]:
        """Fuse scores, then MaskFormer's per-image post-processing (semantic / panoptic / instance).

        No query is dropped for its CLIP argmax: "background" only lowers the fused class
        probabilities, and panoptic inference keeps every query whose best one passes the
        object-mask threshold."""
        results = []
        for clip_logits, pred, x in zip(logits, preds, batched_inputs):
            size = pred["image_size"]
            results.append(self.postprocess_low_res(
                self.class_probabilities(clip_logits, pred["pred_logits"]), pred["pred_masks"],
                padded_size=pred["padded_size"], image_size=size, height=x.get("height", size[0]),
                width=x.get("width", size[1])))
        return results


def resolve_logit_scale(configured: float, clip) -> float:
    """``configured`` if > 0, else the CLIP model's learned scale ``exp(clip.logit_scale)``."""
    if configured > 0:
        return float(configured)
    learned = getattr(clip, "logit_scale", None)
    if learned is None:
        raise ValueError("MODEL.MASQ_CLIP.LOGIT_SCALE <= 0 asks for the CLIP model's learned logit scale, "
                         f"but {type(clip).__name__} has no logit_scale: set a positive value")
    return float(torch.as_tensor(learned).detach().exp())


def _dataset_vocabulary(names: Sequence[str]) -> list[str] | None:
    """Vocabulary of the first named dataset, or None when none is named / registered with classes."""
    names = list(names)
    if not names:
        return None
    meta = MetadataCatalog.get(names[0])
    if not (meta.get("stuff_classes") or meta.get("thing_classes")):
        return None
    return vocabulary_from_metadata(names[0])[0]
