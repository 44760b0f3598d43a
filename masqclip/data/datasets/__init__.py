"""Dataset registration: importing this package registers every dataset name.

Loaders resolve their paths under ``$DETECTRON2_DATASETS`` (default ``./datasets``) when called;
a missing dataset raises :class:`DatasetNotFoundError` naming what to prepare.
"""
from .ade20k import register_ade20k
from .coco import register_coco
from .common import DatasetNotFoundError, datasets_root, resolve_path
from .pascal_context import register_pascal_context
from .synthetic import register_synthetic

register_coco()
register_ade20k()
register_pascal_context()
register_synthetic()

__all__ = ["DatasetNotFoundError", "datasets_root", "resolve_path"]
