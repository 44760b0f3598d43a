"""Pascal Context 59-class semantic labels (validation) from the raw release; see _pascal_context.py."""
from __future__ import annotations

from ._common import root_from_args, run_reporting_missing
from ._pascal_context import add_arguments  # noqa: F401  (the plugin protocol's add_arguments)

COMMAND = "pascal-context-59"
HELP = "Pascal Context 59-class semantic labels from the .mat release"


def main(args) -> int:
    from ._pascal_context import prepare_pascal_context

    return run_reporting_missing(COMMAND, lambda: prepare_pascal_context(
        root_from_args(args), 59, args.source, args.split_file), args=args, datasets=registered_datasets(args))


def registered_datasets(args) -> list[str]:
    return ["pascal_context_59_sem_seg_val"]
