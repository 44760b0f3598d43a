"""Check a prepared dataset before any training or evaluation uses it.

NAME is a preparation (``synthetic``, ``coco-ovsplit``, ``ade20k-150``, ...: every dataset it made)
or a registered dataset name (``ade20k_panoptic_val``). Checked: image counts (the official sets'
sizes; the synthetic world's own; not with ``--expect reduced``), the class table (count, names,
ids), label values, every image having its annotation, non-empty segments, panoptic PNG ids
against the JSON, and the preparation's manifest (``<root>/.prepared/<preparation>.json``) against
the data now on disk. Prints one line per problem and exits with status 2 when there is any.
"""
from __future__ import annotations

import sys

COMMAND = "check-data"
HELP = "verify a prepared dataset (counts, class table, labels, segments) before any job uses it"


def add_arguments(parser) -> None:
    from ..data.datasets.common import DATASETS_ENV, DEFAULT_DATASETS_ROOT

    parser.add_argument("name", help="preparation name (e.g. ade20k-150) or registered dataset name")
    parser.add_argument("--root", default=None,
                        help=f"datasets root (default ${DATASETS_ENV} or {DEFAULT_DATASETS_ROOT})")
    parser.add_argument("--expect", choices=["full", "reduced"], default="full",
                        help="full: the benchmark's image counts too; reduced: structure only (subsets, "
                             "test fixtures). The synthetic world is always held to its own sizes")
    parser.add_argument("--workers", type=int, default=1, help="processes reading label files")


def main(args) -> int:
    import os
    from pathlib import Path

    from ..data import DatasetCatalog  # noqa: F401  (registers every dataset)
    from ..data.check import check_dataset, datasets_of
    from ..data.datasets.common import DATASETS_ENV, datasets_root
    from ..data.manifest import file_hash, manifest_path, read_manifest, summarize

    if args.root:
        os.environ[DATASETS_ENV] = str(Path(args.root).resolve())
    root = datasets_root()
    prefix = f"masqclip check-data {args.name}"
    names = datasets_of(args.name, root)
    if names is None:
        print(f"{prefix}: {args.name!r} is neither a preparation nor a registered dataset", file=sys.stderr)
        return 2
    if not names:  # e.g. ADE20K-150's training phase alone: nothing a job reads by name
        if read_manifest(root, args.name) is None:
            print(f"{prefix}: {root}/.prepared/{args.name}.json: no manifest (run 'masqclip prepare "
                  f"{args.name}')", file=sys.stderr)
            return 2
        print(f"{args.name}: the preparation made no registered dataset; nothing to check")
        return 0
    problems: list[str] = []
    manifest = read_manifest(root, args.name) if args.name not in DatasetCatalog else None
    if manifest is None and args.name not in DatasetCatalog:
        problems.append(f"{root}/.prepared/{args.name}.json: no manifest (run 'masqclip prepare {args.name}')")
    for name in names:
        departs = [d for d in (manifest or {}).get("departs_from_official", []) if d.startswith("class table")]
        found, summary = check_dataset(name, args.expect, workers=max(1, args.workers),
                                       progress=lambda line: print(line, flush=True), table_departs=bool(departs))
        for note in summary.get("notes", []):
            print(f"note: {note}")
        problems += found
        recorded = (manifest or {}).get("datasets", {}).get(name)
        if recorded and summary:
            now = summarize(name)
            for key in ("images", "class_table_sha256"):
                if recorded.get(key) != now[key]:
                    problems.append(f"{name}: manifest records {key} {recorded.get(key)!r}, the data on disk "
                                    f"has {now[key]!r} (prepared data changed since; prepare again)")
        if not found:
            print(f"{name}: ok ({summary.get('images')} images, {summary.get('classes')} classes)")
    for line in problems:
        print(f"{prefix}: {line}", file=sys.stderr)
    if problems:
        print(f"{prefix}: {len(problems)} problem(s); nothing may train or evaluate on this data", file=sys.stderr)
        return 2
    print(f"{args.name}: every check passed ({args.expect} expectations)")
    if manifest is not None:
        path = manifest_path(root, args.name)
        print(f"manifest {path} sha256:{file_hash(path)[:16]} (masqclip {manifest.get('masqclip_version')})")
    return 0
