"""The "MaskDistill" meta-architecture: a progressive-distillation student
(docs/method.md#stage-b-progressive-distillation).

A student is a ``MaskFormer`` with identical inference. In training, a frozen teacher (another
``MaskFormer`` of the same architecture) predicts masks for the batch; the confident ones that no
ground truth explains (``losses.distill.select_distill_targets``) join the targets as extra
class-0 masks, and the student learns from the normal Mask2Former loss.

The teacher is deliberately NOT a submodule: it is stored with ``object.__setattr__`` so it is
absent from ``state_dict()``, ``parameters()``, ``named_modules()`` and DDP's view (a student
checkpoint has exactly the teacher's keys). ``.to()``, ``.cuda()``, ``.float()`` etc. still move
it along (``_apply`` is forwarded); ``train()`` never reaches it, so it stays in eval mode.
Load it with ``load_teacher(path)`` (default path: ``MODEL.DISTILL.TEACHER_WEIGHTS``, else
``MODEL.WEIGHTS``) or hand one over with ``set_teacher(model)``.

Training output: weighted losses (keys starting with ``loss_``) plus the non-loss metric
``"distill/num_extra"`` (mean extra targets per image, detached): sum only the ``loss_`` keys.
"""
from __future__ import annotations

import torch

from ..losses.distill import select_distill_targets
from ..postprocess import object_scores
from .build import META_ARCH_REGISTRY
from .mask_former import MaskFormer

__all__ = ["EXTRA_TARGET_CLASS", "MaskDistill", "NUM_EXTRA_KEY"]

# Metric key (not a loss) in MaskDistill's training output.
NUM_EXTRA_KEY = "distill/num_extra"
# Label of the extra (class-agnostic) targets.
EXTRA_TARGET_CLASS = 0


@META_ARCH_REGISTRY.register()
class MaskDistill(MaskFormer):
    """MaskFormer student trained on ground truth plus a frozen teacher's novel-looking masks."""

    def __init__(self, *, teacher: MaskFormer, score_threshold: float, nms_threshold: float,
                 distill_num_points: int, teacher_weights: str = "", **kwargs):
        """
        Args:
            teacher: a MaskFormer of the same architecture (randomly initialised until loaded).
            score_threshold: alpha; teacher masks need score > alpha.
            nms_threshold: beta; max (smoothed) dice with any gt < beta, and dice-NMS at beta.
            distill_num_points: points of each random sample the dice values are computed on.
            teacher_weights: default checkpoint path for ``load_teacher()`` ("" = none).
            **kwargs: ``MaskFormer``'s constructor arguments.
        """
        super().__init__(**kwargs)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.distill_num_points = distill_num_points
        self.teacher_weights = teacher_weights
        self._teacher_loaded = False
        self._hold_teacher(teacher)

    @classmethod
    def config_kwargs(cls, cfg) -> dict:
        kwargs = super().config_kwargs(cfg)
        kwargs.update(
            teacher=MaskFormer.from_config(cfg),
            score_threshold=cfg.MODEL.MASQ_CLIP.SCORE_THRESHOLD,
            nms_threshold=cfg.MODEL.MASQ_CLIP.NMS_THRESHOLD,
            distill_num_points=cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS,
            teacher_weights=cfg.MODEL.DISTILL.TEACHER_WEIGHTS or cfg.MODEL.WEIGHTS,
        )
        return kwargs

    # -- the teacher, outside the module tree ------------------------------------------------
    @property
    def teacher(self) -> MaskFormer:
        """The frozen teacher (eval mode, no gradients); not part of the state dict."""
        return self.__dict__["_teacher"]

    def _hold_teacher(self, teacher: MaskFormer) -> None:
        teacher.eval()
        teacher.requires_grad_(False)
        object.__setattr__(self, "_teacher", teacher.to(self.device))

    def set_teacher(self, teacher: MaskFormer) -> "MaskDistill":
        """Use ``teacher`` (e.g. the previous round's student, in memory) as the frozen teacher."""
        self._hold_teacher(teacher)
        self._teacher_loaded = True
        return self

    def load_teacher(self, path: str | None = None) -> "MaskDistill":
        """Load the teacher's weights (``masqclip.checkpoint.load_checkpoint``).

        Args:
            path: checkpoint file; default ``teacher_weights`` (from the config).

        Raises:
            ValueError: no path; ``CheckpointError`` (a ValueError): the checkpoint lacks teacher
                parameters, or a shape differs.
        """
        path = path or self.teacher_weights
        if not path:
            raise ValueError("MaskDistill.load_teacher: no checkpoint given and neither "
                             "MODEL.DISTILL.TEACHER_WEIGHTS nor MODEL.WEIGHTS is set")
        from ...checkpoint import load_checkpoint  # late: checkpoint code is only needed here

        # refuses (CheckpointError, naming them) missing tensors and shape mismatches; logs unexpected keys
        load_checkpoint(self.teacher, path, required=self.teacher.required_weight_keys())
        self._hold_teacher(self.teacher)
        self._teacher_loaded = True
        return self

    def _check_teacher(self) -> None:
        if not self._teacher_loaded:
            raise RuntimeError("MaskDistill has no teacher: call load_teacher(path) (or set_teacher) before "
                               "training; path defaults to MODEL.DISTILL.TEACHER_WEIGHTS, else MODEL.WEIGHTS")

    def _apply(self, fn, recurse: bool = True):
        # .to() / .cuda() / .half(): move the teacher with the student
        super()._apply(fn, recurse)
        if "_teacher" in self.__dict__:
            self.teacher._apply(fn, recurse)
        return self

    # -- training ----------------------------------------------------------------------------
    def forward(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        """Inference: as MaskFormer. Training: weighted losses plus ``"distill/num_extra"``."""
        if self.training:
            self._check_teacher()  # fail before the student's forward pass
        self._num_extra = []  # filled by prepare_targets
        out = super().forward(batched_inputs)
        if self.training:
            num_extra = torch.tensor(self._num_extra, dtype=torch.float32, device=self.device)
            out[NUM_EXTRA_KEY] = num_extra.mean() if num_extra.numel() else num_extra.new_zeros(())
        return out

    def prepare_targets(self, batched_inputs: list[dict], padded_size: tuple[int, int]) -> list[dict]:
        """Ground truth (as MaskFormer) with the teacher's selected masks appended as class 0."""
        targets = super().prepare_targets(batched_inputs, padded_size)
        self._check_teacher()
        self._num_extra = []
        for target, pred in zip(targets, self.teacher.predict_queries(batched_inputs)):
            extra = self.extra_targets(pred, target["masks"], padded_size)
            target["masks"] = torch.cat([target["masks"], extra])
            target["labels"] = torch.cat([target["labels"], target["labels"].new_full((len(extra),),
                                                                                      EXTRA_TARGET_CLASS)])
            self._num_extra.append(len(extra))
        return targets

    def extra_targets(self, pred: dict, gt_masks: torch.Tensor, padded_size: tuple[int, int]) -> torch.Tensor:
        """Teacher masks of one image selected as extra targets.

        Args:
            pred: one entry of ``MaskFormer.predict_queries``: "pred_logits" [Q, 2], "pred_masks"
                [Q, h, w] over the teacher's padded extent "padded_size", "image_size" (H, W).
            gt_masks: bool [N, Hp, Wp] student targets (zero-padded to ``padded_size``).
            padded_size: (Hp, Wp) of the student's batch.

        Returns:
            bool [M, Hp, Wp] extra masks, zero outside the image.
        """
        if tuple(pred["padded_size"]) != tuple(padded_size):
            raise ValueError(f"teacher padded the batch to {tuple(pred['padded_size'])}, the student to "
                             f"{tuple(padded_size)}: teacher and student need the same SIZE_DIVISIBILITY")
        return select_distill_targets(
            pred["pred_masks"], object_scores(pred["pred_logits"]), gt_masks,
            score_threshold=self.score_threshold, nms_threshold=self.nms_threshold,
            num_points=self.distill_num_points, valid_size=tuple(pred["image_size"]))
