"""Where datasets live and how a missing one is reported.

Every registered loader resolves its paths at call time under ``$DETECTRON2_DATASETS`` (default
``./datasets``), so registration itself touches no file and changing the variable later works.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from ...errors import UserError
from ..catalog import DatasetCatalog, Metadata, MetadataCatalog

DATASETS_ENV = "DETECTRON2_DATASETS"
DEFAULT_DATASETS_ROOT = "./datasets"


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A registered dataset whose files are missing or incomplete.

    The message (one line) names the dataset, the expected path(s) (the first few), and how to make it.
    """

    SHOWN = 3  # missing paths named in the message

    def __init__(self, dataset: str, missing: list[Path], how_to_prepare: str):
        self.dataset = dataset
        self.missing = [Path(p) for p in missing]
        self.how_to_prepare = how_to_prepare
        listing = ", ".join(str(p) for p in self.missing[:self.SHOWN])
        if len(self.missing) > self.SHOWN:
            listing += f" and {len(self.missing) - self.SHOWN} more"
        super().__init__(f"dataset {dataset!r} is missing or incomplete; not found: {listing}. "
                         f"To prepare it: {how_to_prepare}")

    def __str__(self) -> str:
        return str(self.args[0])


def datasets_root() -> Path:
    """``$DETECTRON2_DATASETS`` (default ``./datasets``), read now, not at import."""
    return Path(os.environ.get(DATASETS_ENV) or DEFAULT_DATASETS_ROOT)


def resolve_path(path: str | os.PathLike) -> Path:
    """A metadata file path (``json_file``, ``panoptic_json``, ...) as a usable path.

    Registered metadata stores paths relative to the datasets root so that the root is read when the
    path is used; absolute paths pass through unchanged.
    """
    path = Path(path)
    return path if path.is_absolute() else datasets_root() / path


def require(dataset: str, paths: Iterable[Path], how_to_prepare: str) -> None:
    """Raise one :class:`DatasetNotFoundError` listing every path of ``paths`` that does not exist."""
    missing = [Path(p) for p in paths if not Path(p).exists()]
    if missing:
        raise DatasetNotFoundError(dataset, missing, how_to_prepare)


def require_nonempty_dir(dataset: str, path: Path, pattern: str, how_to_prepare: str) -> None:
    """Like :func:`require`, and also fail when ``path`` holds no file matching ``pattern``."""
    require(dataset, [path], how_to_prepare)
    if next(Path(path).glob(pattern), None) is None:
        raise DatasetNotFoundError(dataset, [Path(path) / pattern], how_to_prepare)


class LazyMetadata(Metadata):
    """Metadata whose dataset-dependent fields (e.g. class names a release ships in its own files)
    are read from disk the first time one of them is asked for, not at registration."""

    def __init__(self, name: str, lazy_keys: Iterable[str], read: Callable[[], dict[str, Any]], **fields: Any):
        super().__init__(name=name, **fields)
        object.__setattr__(self, "_lazy_keys", frozenset(lazy_keys))
        object.__setattr__(self, "_lazy_read", read)

    def __missing__(self, key: str) -> Any:
        if key not in self._lazy_keys:
            raise KeyError(key)
        for k, v in self._lazy_read().items():
            dict.setdefault(self, k, v)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def forget_lazy_metadata(name: str) -> None:
    """Drop the file-read metadata fields of ``name`` so the next access reads the files again
    (after the files or the datasets root changed)."""
    meta = MetadataCatalog.get(name)
    for key in getattr(meta, "_lazy_keys", ()):
        dict.pop(meta, key, None)


def register_dataset(name: str, loader: Callable[[], list[dict]], *,
                     lazy: tuple[Iterable[str], Callable[[], dict[str, Any]]] | None = None,
                     **metadata: Any) -> None:
    """Register ``loader`` under ``name`` (replacing an earlier registration) with its metadata.

    Args:
        lazy: ``(keys, read)``: metadata ``keys`` that ``read()`` supplies from the dataset's files
            on first access (a missing dataset then raises :class:`DatasetNotFoundError`).
    """
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    if lazy is None:
        MetadataCatalog.get(name).set(**metadata)
    else:
        # The catalog has no public way to hold a Metadata subclass; this is the one place we reach in.
        MetadataCatalog._meta[name] = LazyMetadata(name, lazy[0], lazy[1], **metadata)


def split_synonyms(name: str) -> list[str]:
    """``"wall, brick wall"`` -> ``["wall", "brick wall"]`` (the metadata's synonym convention)."""
    return [s.strip() for s in name.split(",") if s.strip()]
