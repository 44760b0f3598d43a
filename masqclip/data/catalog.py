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

from ..errors import UserError, closest


class UnknownDatasetError(UserError, KeyError):
    """A dataset name that is not registered (the message suggests the closest registered names)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


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
        self.require(name)
        return self._loaders[name]()

    def require(self, *names: str) -> None:
        """Raise ``UnknownDatasetError`` for the first name that is not registered, with the closest ones."""
        _ensure_builtin_datasets()
        for name in names:
            if name not in self._loaders:
                hint = closest(name, self._loaders)
                if not hint:
                    known = sorted(self._loaders)
                    more = f" and {len(known) - 8} more" if len(known) > 8 else ""
                    hint = f"; registered: {', '.join(known[:8])}{more}"
                raise UnknownDatasetError(f"unknown dataset {name!r}{hint}")

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
