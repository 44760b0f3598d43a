"""Prepare a dataset: generate the synthetic world, or convert a raw release into the layout the
dataset catalog reads (under $DETECTRON2_DATASETS, default ./datasets)."""
from __future__ import annotations

COMMAND = "prepare"
HELP = "generate or convert a dataset (see 'masqclip prepare --help')"


def add_arguments(parser) -> None:
    from ..cli import add_plugin_subparsers
    from ..data import prepare

    add_plugin_subparsers(parser, prepare, dest="dataset", metavar="DATASET")


def main(args) -> int:  # only reached when no dataset was named
    from ..cli import build_parser

    build_parser().parse_args(["prepare", "--help"])
    return 2
