"""Training losses: Hungarian matching, the set criterion, point sampling, distillation targets."""
from .criterion import SetCriterion, dice_loss, sigmoid_bce_loss
from .distill import dice_nms, select_distill_targets
from .matcher import HungarianMatcher, pairwise_sigmoid_bce
from .point_features import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    pairwise_dice,
    point_sample,
    random_point_coords,
)

__all__ = [
    "HungarianMatcher",
    "SetCriterion",
    "calculate_uncertainty",
    "dice_loss",
    "dice_nms",
    "get_uncertain_point_coords_with_randomness",
    "pairwise_dice",
    "pairwise_sigmoid_bce",
    "point_sample",
    "random_point_coords",
    "select_distill_targets",
    "sigmoid_bce_loss",
]
