"""Range checks of config values: a number no run can use is refused when the config is loaded.

Types are checked while merging (``config.py``); this adds what a type cannot say (a batch of 0
images, a negative checkpoint period). Each rule names its key, so the message says which key holds
what and what it must be.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .config import ConfigError

_Rule = tuple[str, Callable[[Any], bool], str]


def _positive(x) -> bool:
    return x > 0


def _non_negative(x) -> bool:
    return x >= 0


def _unit(x) -> bool:
    return 0 <= x <= 1


RULES: list[_Rule] = [
    *((key, _positive, "> 0") for key in (
        "SOLVER.IMS_PER_BATCH", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.LOG_PERIOD", "SOLVER.GAMMA",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "MODEL.MASK_FORMER.DEC_LAYERS",
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "MODEL.MASQ_CLIP.TRAIN_MASK_SIZE", "INPUT.IMAGE_SIZE",
        "INPUT.MIN_SCALE", "INPUT.MAX_SCALE", "TEST.DETECTIONS_PER_IMAGE")),
    *((key, _non_negative, ">= 0") for key in (
        "SOLVER.MAX_ITER", "SOLVER.BASE_LR", "SOLVER.WEIGHT_DECAY", "SOLVER.WARMUP_ITERS",
        "SOLVER.CHECKPOINTS_TO_KEEP", "SOLVER.LOG_SECONDS", "DATALOADER.NUM_WORKERS", "TEST.EVAL_PERIOD",
        "TEST.INFERENCE_LOG_PERIOD",
        "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST")),
    *((key, _unit, "between 0 and 1") for key in (
        "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD",
        "MODEL.MASQ_CLIP.SCORE_THRESHOLD", "MODEL.MASQ_CLIP.NMS_THRESHOLD", "MODEL.MASQ_CLIP.LABEL_DICE_THRESHOLD")),
]


def _get(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_config(cfg, source: str = "") -> None:
    """Raise ``ConfigError`` naming the first key whose value is out of its range (see ``RULES``).

    Args:
        source: the config file, named in the message.
    """
    where = f" (config {source} and overrides)" if source else ""
    for key, ok, expected in RULES:
        value = _get(cfg, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # the type check of merging owns this
        if not math.isfinite(value) or not ok(value):
            raise ConfigError(f"{key} = {value!r} is out of range: it must be {expected}{where}")
    if 0 < cfg.INPUT.MIN_SIZE_TEST and cfg.INPUT.MAX_SIZE_TEST < cfg.INPUT.MIN_SIZE_TEST:
        raise ConfigError(f"INPUT.MAX_SIZE_TEST = {cfg.INPUT.MAX_SIZE_TEST} is out of range: it must be >= "
                          f"INPUT.MIN_SIZE_TEST ({cfg.INPUT.MIN_SIZE_TEST}){where}")
    if cfg.SOLVER.MAX_ITER > 0 and any(s < 0 for s in cfg.SOLVER.STEPS):
        raise ConfigError(f"SOLVER.STEPS = {list(cfg.SOLVER.STEPS)} is out of range: steps must be >= 0{where}")
