"""``build_evaluator``: the evaluators a dataset's ``evaluator_type`` calls for."""
from __future__ import annotations

from ..data.catalog import DatasetCatalog, MetadataCatalog
from .evaluator import DatasetEvaluator, DatasetEvaluators
from .instance import InstanceSegEvaluator
from .panoptic import PanopticEvaluator
from .recall import ProposalRecallEvaluator
from .semantic import SemSegEvaluator


def build_evaluator(cfg, dataset_name: str, output_dir: str | None = None) -> DatasetEvaluator:
    """Evaluators for ``dataset_name`` by its metadata's ``evaluator_type``.

    - ``coco``: proposal recall (``TEST.PROPOSAL_RECALL``), plus COCO mask AP unless the model is
      class-agnostic (``MODEL.SEM_SEG_HEAD.NUM_CLASSES == 1``: teachers and students).
    - ``coco_panoptic_seg`` / ``ade20k_panoptic_seg``: PQ, plus mIoU when the dataset has
      ``sem_seg_root`` and ``MODEL.MASK_FORMER.TEST.SEMANTIC_ON``, plus mask AP when
      ``INSTANCE_ON`` and the metadata has a ``json_file`` of instance annotations.
    - ``sem_seg``: mIoU / fwIoU / mACC / pACC.

    Args:
        output_dir: where each evaluator writes its JSON of figures ("" / None: nowhere).
    """
    meta = MetadataCatalog.get(dataset_name)
    kind = meta.get("evaluator_type")
    if kind is None:
        DatasetCatalog.require(dataset_name)  # a misspelt name: say so, with the closest registered ones
    test = cfg.MODEL.MASK_FORMER.TEST
    evaluators: list[DatasetEvaluator] = []
    if kind == "coco":
        if cfg.TEST.PROPOSAL_RECALL.ENABLED:
            rc = cfg.TEST.PROPOSAL_RECALL
            evaluators.append(ProposalRecallEvaluator(
                dataset_name=dataset_name, topk=rc.TOPK, iou_threshold=rc.IOU_THRESHOLD, score_threshold=rc.SCORE_THRESHOLD,
                mean_iou_thresholds=rc.MEAN_IOU_THRESHOLDS, output_dir=output_dir))
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != 1:
            evaluators.append(InstanceSegEvaluator(dataset_name=dataset_name, output_dir=output_dir,
                                                   max_dets=cfg.TEST.DETECTIONS_PER_IMAGE))
    elif kind in ("coco_panoptic_seg", "ade20k_panoptic_seg"):
        if test.PANOPTIC_ON:
            evaluators.append(PanopticEvaluator(dataset_name=dataset_name, output_dir=output_dir))
        if test.SEMANTIC_ON and meta.get("sem_seg_root"):
            evaluators.append(_semantic(meta, output_dir))
        if test.INSTANCE_ON and meta.get("json_file"):
            evaluators.append(InstanceSegEvaluator(dataset_name=dataset_name, output_dir=output_dir,
                                                   max_dets=cfg.TEST.DETECTIONS_PER_IMAGE))
    elif kind == "sem_seg":
        evaluators.append(_semantic(meta, output_dir))
    else:
        raise KeyError(f"dataset {dataset_name!r} has evaluator_type {kind!r}; known: coco, "
                       "coco_panoptic_seg, ade20k_panoptic_seg, sem_seg")
    if not evaluators:
        raise ValueError(f"no evaluator applies to {dataset_name!r} ({kind}) with this config's "
                         "MODEL.MASK_FORMER.TEST.*_ON switches")
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def _semantic(meta, output_dir: str | None) -> SemSegEvaluator:
    return SemSegEvaluator(class_names=meta.stuff_classes, ignore_label=meta.get("ignore_label", 255),
                           output_dir=output_dir, dataset_name=meta.name)
