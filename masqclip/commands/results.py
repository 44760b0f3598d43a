"""Build the result tables and plots of a workflow run from its manifest (written by 'masqclip plan'):

  masqclip results tables --manifest results/manifest.json --output-dir results/tables [--miou-convention gt|d2v06]
  masqclip results plots --manifest results/manifest.json --output-dir results/plots

The manifest lists every table and plot, and every metrics file with its setting, stage, round,
seed, variant and test; nothing is read from file or folder names. With several seeds the tables
show mean +- standard deviation (per-seed values in the CSV) and the plots the spread.
"""
from __future__ import annotations

import argparse

COMMAND = "results"
HELP = "write result tables (md/tex/csv) or plots (png) listed in a pipeline manifest"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, help_text in (("tables", "Markdown, LaTeX and CSV tables in the paper's layout"),
                            ("plots", "training curves, base vs novel, CLIP zero-shot accuracy")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--manifest", required=True, help="the pipeline manifest ('masqclip plan' writes it)")
        p.add_argument("--output-dir", required=True, help="folder to write into (created)")
    sub.choices["tables"].add_argument(
        "--miou-convention", choices=("gt", "d2v06"), default=None,
        help="semantic mIoU in the tables: over ground-truth classes (gt, detectron2 since 2022-07) or "
             "detectron2 v0.6's (d2v06); default: the manifest's (the config's miou_convention)")


def main(args: argparse.Namespace) -> int:
    from ..manifest import Manifest

    manifest = Manifest.read(args.manifest)  # a missing or malformed file: one line, exit 2 (UserError)
    if args.what == "tables":
        from ..results import build_tables, write_tables

        written = write_tables(build_tables(manifest, miou_convention=args.miou_convention), args.output_dir)
    else:
        from ..results.plots import make_plots

        written = make_plots(manifest, args.output_dir)
    for path in written:
        print(path)
    return 0
