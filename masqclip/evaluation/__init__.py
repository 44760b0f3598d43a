"""Evaluators: instance AP (generalized / constrained), panoptic PQ, semantic mIoU, proposal recall."""
from .build import build_evaluator
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from .instance import InstanceSegEvaluator
from .panoptic import PanopticEvaluator
from .recall import ProposalRecallEvaluator
from .semantic import SemSegEvaluator

__all__ = [
    "DatasetEvaluator", "DatasetEvaluators", "InstanceSegEvaluator", "PanopticEvaluator",
    "ProposalRecallEvaluator", "SemSegEvaluator", "build_evaluator", "inference_on_dataset",
]
