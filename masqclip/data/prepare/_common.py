"""Helpers shared by the real-dataset preparation plugins (not a plugin: the name starts with "_")."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from ..datasets.common import DATASETS_ENV, DEFAULT_DATASETS_ROOT, DatasetNotFoundError


def add_root_argument(parser) -> None:
    parser.add_argument("--root", default=None,
                        help=f"datasets root holding the raw release and receiving the prepared files "
                             f"(default ${DATASETS_ENV} or {DEFAULT_DATASETS_ROOT})")


def root_from_args(args) -> Path:
    return Path(args.root or os.environ.get(DATASETS_ENV) or DEFAULT_DATASETS_ROOT)


def run_reporting_missing(command: str, fn: Callable[[], object], *, args=None, datasets=(), departures=()) -> int:
    """Run a preparation; a missing raw input is one clear message and exit status 2, not a traceback.

    With ``args`` (the parsed command line) and ``datasets`` (the registered names the preparation
    made), a successful run ends by writing the manifest ``<root>/.prepared/<command>.json``;
    ``departures`` lists the ways the options make the data depart from the official preparation.
    """
    try:
        fn()
        if args is not None:
            write_prepared_manifest(command, args, datasets, departures=departures)
    except DatasetNotFoundError as err:
        print(f"masqclip prepare {command}: {err}", file=sys.stderr)
        return 2
    return 0


def write_prepared_manifest(command: str, args, datasets, root: Path | None = None, departures=()) -> Path:
    """Write the manifest of a finished preparation (see :mod:`masqclip.data.manifest`)."""
    from ..manifest import write_manifest

    options = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("command", "dataset")}
    path = write_manifest(root or root_from_args(args), command, list(datasets), options, list(departures))
    print(f"manifest: {path}")
    return path


def bbox_of(mask) -> list[int]:
    """[x, y, w, h] of a non-empty bool [H, W] numpy mask."""
    import numpy as np

    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
