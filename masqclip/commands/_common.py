"""Argument helpers shared by sub-commands."""
from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config-file F`` plus trailing ``KEY VALUE`` overrides, as in detectron2's tools."""
    parser.add_argument("--config-file", metavar="FILE", default="", help="YAML config (with _BASE_ inheritance)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.BASE_LR 0.001 MODEL.WEIGHTS model.pth")


def config_from_args(args: argparse.Namespace, freeze: bool = True):
    from ..config import setup_cfg

    return setup_cfg(args.config_file or None, args.opts, freeze=freeze)
