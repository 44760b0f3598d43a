"""The manifest a preparation writes: which registered datasets it made, their image counts and
class-table hashes, the preparation's arguments, the masqclip version and a hash of the
preparation code and category tables.

It lives at ``<datasets root>/.prepared/<preparation>.json`` (e.g. ``.prepared/ade20k-150.json``);
``masqclip check-data`` reads it and training / evaluation runs record it, so a result names the
exact data it came from. The file holds no time stamp or path: the same data gives the same file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

PREPARED_DIR = ".prepared"
FORMAT = 1


def manifest_path(root: Path | str, preparation: str) -> Path:
    return Path(root) / PREPARED_DIR / f"{preparation}.json"


def class_table(name: str) -> list[dict]:
    """A registered dataset's classes as ``[{"id": contiguous, "dataset_id", "name", "isthing"}]``
    (from its metadata; semantic sets have dataset id = contiguous id and no things)."""
    from .catalog import MetadataCatalog

    meta = MetadataCatalog.get(name)
    things = dict(meta.get("thing_dataset_id_to_contiguous_id") or {})
    stuff = dict(meta.get("stuff_dataset_id_to_contiguous_id") or {})
    names = meta.get("stuff_classes") or meta.get("thing_classes") or []
    if things and not stuff and meta.get("evaluator_type") == "coco":  # instance sets: things only
        by_contiguous = {v: k for k, v in things.items()}
        return [{"id": i, "dataset_id": int(by_contiguous[i]), "name": n, "isthing": 1}
                for i, n in enumerate(meta.thing_classes)]
    by_contiguous = {v: (k, 1) for k, v in things.items()}
    by_contiguous.update({v: (k, 0) for k, v in stuff.items()})
    return [{"id": i, "dataset_id": int(by_contiguous.get(i, (i, 0))[0]), "name": n,
             "isthing": by_contiguous.get(i, (i, 0))[1]} for i, n in enumerate(names)]


def table_hash(table: list[dict]) -> str:
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode("utf-8")).hexdigest()


def summarize(name: str) -> dict[str, Any]:
    """Image count, class count and class-table hash of a registered, prepared dataset."""
    from .catalog import DatasetCatalog
    from .datasets.common import forget_lazy_metadata

    try:
        table = class_table(name)
        return {"images": len(DatasetCatalog.get(name)), "classes": len(table),
                "class_table_sha256": table_hash(table)}
    finally:
        forget_lazy_metadata(name)  # class names were read from files under the current root


def write_manifest(root: Path | str, preparation: str, datasets: Iterable[str], args: dict[str, Any],
                   departures: list[str] | None = None) -> Path:
    """Write ``<root>/.prepared/<preparation>.json`` for the registered ``datasets`` it made;
    ``departures``: how the options make the data depart from the official preparation."""
    from .. import __version__
    import os

    from .datasets.common import DATASETS_ENV

    previous = os.environ.get(DATASETS_ENV)
    os.environ[DATASETS_ENV] = str(root)  # the loaders read the root from the environment
    try:
        data = {name: summarize(name) for name in datasets}
    finally:
        if previous is None:
            os.environ.pop(DATASETS_ENV, None)
        else:
            os.environ[DATASETS_ENV] = previous
    manifest = {"format": FORMAT, "preparation": preparation, "masqclip_version": __version__,
                "preparation_code_sha256": preparation_code_hash(),
                "args": {k: v for k, v in sorted(args.items()) if k not in ("root", "output", "workers")},
                "datasets": data, "departs_from_official": list(departures or [])}
    path = manifest_path(root, preparation)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def preparation_code_hash() -> str:
    """Hash of the preparation code and the category tables it writes (changes whenever either does)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted([*(here / "prepare").glob("*.py"), *(here / "categories").glob("*.json")]):
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes())
    return digest.hexdigest()


def read_manifest(root: Path | str, preparation: str) -> dict | None:
    path = manifest_path(root, preparation)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def file_hash(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifests_for(datasets: Iterable[str], root: Path | str | None = None) -> dict[str, dict]:
    """For each registered dataset name, the manifest that lists it under ``root`` (default the
    datasets root): ``{name: {"preparation", "manifest_sha256", "path"}}``; unprepared names are left out."""
    from .datasets.common import datasets_root

    folder = Path(root if root is not None else datasets_root()) / PREPARED_DIR
    wanted, found = set(datasets), {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for name in wanted & set(manifest.get("datasets", {})):
            found[name] = {"preparation": manifest.get("preparation", path.stem),
                           "manifest_sha256": file_hash(path), "path": str(path)}
    return found
