"""Load a config (defaults <- file <- overrides), check it, and print or write the merged result.

Fails, naming the key and file, on unknown keys, wrong types or unsafe YAML; the workflow runs this
before any job so a bad config stops everything early.
"""
from __future__ import annotations

import sys

from ._common import add_config_arguments, config_from_args

COMMAND = "config"
HELP = "check a config and print the merged YAML"


def add_arguments(parser) -> None:
    parser.add_argument("--output", "-o", default="", help="write the merged YAML here instead of stdout")
    add_config_arguments(parser)


def main(args) -> int:
    cfg = config_from_args(args)
    text = cfg.dump()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0
