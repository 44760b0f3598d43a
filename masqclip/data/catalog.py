"""Dataset and metadata catalogs: dataset name -> loader of per-image records, and its metadata.

Records are plain dicts in detectron2's standard format: ``file_name``, ``image_id``, ``height``,
``width`` and, as the dataset has them, ``annotations`` (instance), ``pan_seg_file_name`` +
``segments_info`` (panoptic), ``sem_seg_file_name`` (semantic).

The built-in names (official and synthetic, ``masqclip.data.datasets``) are registered on the first
use of either catalog, so ``build_model(cfg)`` or an evaluator finds a dataset's vocabulary without
the caller importing the registrations first.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

BUILTIN_REGISTRATIONS = "masqclip.data.datasets"
_builtin_state = "pending"  # pending -> loading -> done


def _ensure_builtin_datasets() -> None:
    """Import the built-in registrations once (re-entrant: they call the catalogs while importing)."""
    global _builtin_state
    if _builtin_state != "pending":
        return
    _builtin_state = "loading"
    try:
        importlib.import_module(BUILTIN_REGISTRATIONS)
    except BaseException:
        _builtin_state = "pending"
        raise
    _builtin_state = "done"


class _DatasetCatalog:
    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, loader: Callable[[], list[dict]]) -> None:
        _ensure_builtin_datasets()  # so a user's name that clashes with a built-in one fails here
        if not callable(loader):
            raise TypeError("a dataset loader must be a zero-argument callable")
        if name in self._loaders:
            raise KeyError(f"dataset {name!r} is already registered")
        self._loaders[name] = loader

    def get(self, name: str) -> list[dict]:
        _ensure_builtin_datasets()
        try:
            loader = self._loaders[name]
        except KeyError:
            raise KeyError(f"dataset {name!r} is not registered; known: {', '.join(sorted(self._loaders))}") from None
        return loader()

    def list(self) -> list[str]:
        _ensure_builtin_datasets()
        return sorted(self._loaders)

    def remove(self, name: str) -> None:
        _ensure_builtin_datasets()
        self._loaders.pop(name, None)
        MetadataCatalog.remove(name)

    def __contains__(self, name: str) -> bool:
        _ensure_builtin_datasets()
        return name in self._loaders


class Metadata(dict):
    """Attribute-style metadata of one dataset (thing_classes, stuff_classes, evaluator_type, ...).

    Setting an attribute that already holds a different value is an error, as in detectron2.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"metadata of {self.get('name', '?')!r} has no attribute {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self and self[key] != value:
            raise AttributeError(f"metadata {key!r} of {self.get('name', '?')!r} is already set to a different value")
        self[key] = value

    def set(self, **kwargs: Any) -> "Metadata":
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self


class _MetadataCatalog:
    def __init__(self) -> None:
        self._meta: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        _ensure_builtin_datasets()
        if name not in self._meta:
            self._meta[name] = Metadata(name=name)
        return self._meta[name]

    def remove(self, name: str) -> None:
        _ensure_builtin_datasets()
        self._meta.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
