"""Build the result tables and plots of a workflow run from its manifest (written by 'masqclip plan'):

  masqclip results tables --manifest results/manifest.json --output-dir results/tables [--miou-convention gt|d2v06]
  masqclip results plots --manifest results/manifest.json --output-dir results/plots
  masqclip results front-page --output results/report/front.html TABLE.html ... PLOT.png ...
  masqclip results compare [--invocation ID] [--setting base-novel] [--test generalized] [--metric segm/AP50_novel]
  masqclip results timeline [--log .snakemake/log/X.snakemake.log] [--output results/plots/timeline.png]

The manifest lists every table and plot, and every metrics file with its setting, stage, round,
seed, variant and test; nothing is read from file or folder names. With several seeds the tables
show mean +- standard deviation (per-seed values in the CSV) and the plots the spread.
"""
from __future__ import annotations

import argparse

COMMAND = "results"
HELP = "write result tables (md/tex/csv/html) or plots (png) listed in a pipeline manifest; compare runs in MLflow"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, help_text in (("tables", "Markdown, LaTeX and CSV tables in the paper's layout"),
                            ("plots", "training curves, base vs novel, CLIP zero-shot accuracy")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--manifest", required=True, help="the pipeline manifest ('masqclip plan' writes it)")
        p.add_argument("--output-dir", required=True, help="folder to write into (created)")
    front = sub.add_parser("front-page", help="one HTML fragment of headline tables (.html) and plots (.png)")
    front.add_argument("--output", required=True, help="HTML file to write")
    front.add_argument("files", nargs="+", help="table fragments (.html) and plots (.png), in page order")
    compare = sub.add_parser("compare", help="one invocation's evaluation runs side by side, from MLflow")
    compare.add_argument("--tracking-uri", default="", help="default $MLFLOW_TRACKING_URI, else the pipeline's store")
    compare.add_argument("--experiment", default="", help="default $MLFLOW_EXPERIMENT_NAME, else 'masqclip'")
    compare.add_argument("--invocation", default="", help="the invocation id (tag 'invocation'); default the newest")
    compare.add_argument("--setting", default="", help="only this setting")
    compare.add_argument("--test", default="", help="only this test set (e.g. generalized)")
    compare.add_argument("--metric", action="append", default=[], help="metric column (repeat); default: AP50 "
                         "novel/base/all, novel recall, PQ, mIoU")
    timeline = sub.add_parser("timeline", help="a run's jobs on a time axis (PNG/SVG) and where the minutes go "
                              "per stage, from its Snakemake log")
    timeline.add_argument("--log", default="", help="the Snakemake log (default: the newest .snakemake/log/*.snakemake.log)")
    timeline.add_argument("--output", default="results/plots/timeline.png", help="plot file (.png or .svg)")
    timeline.add_argument("--table", default="", help="Markdown table file (default: the plot's name with .md)")
    sub.choices["tables"].add_argument(
        "--miou-convention", choices=("gt", "d2v06"), default=None,
        help="semantic mIoU in the tables: over ground-truth classes (gt, detectron2 since 2022-07) or "
             "detectron2 v0.6's (d2v06); default: the manifest's (the config's miou_convention)")


def main(args: argparse.Namespace) -> int:
    if args.what == "front-page":
        return _front_page(args)
    if args.what == "compare":
        return _compare(args)
    if args.what == "timeline":
        return _timeline(args)
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


def _timeline(args: argparse.Namespace) -> int:
    import os

    from ..errors import UserError
    from ..results.timeline import newest_log, parse_log, plot_timeline

    if os.path.splitext(args.output)[1].lower() not in (".png", ".svg"):
        raise UserError(f"masqclip results timeline --output {args.output}: must end in .png or .svg")
    timeline = parse_log(args.log or newest_log("."))
    table = args.table or os.path.splitext(args.output)[0] + ".md"
    text = timeline.markdown()
    plot_timeline(timeline, args.output)
    with open(table, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text, end="")
    print(args.output)
    print(table)
    return 0


def _front_page(args: argparse.Namespace) -> int:
    import sys

    from ..results.front import write_front_page

    try:
        print(write_front_page(args.files, args.output))
    except (OSError, ValueError) as err:
        print(f"masqclip results front-page: {err}", file=sys.stderr)
        return 2
    return 0


def _compare(args: argparse.Namespace) -> int:
    import sys

    from ..results.compare import DEFAULT_METRICS, comparison
    from ..tracking import Tracker

    tracker = Tracker(uri=args.tracking_uri, experiment=args.experiment)
    try:
        parent, table = comparison(uri=tracker.uri, experiment=tracker.experiment, invocation=args.invocation,
                                   metrics=tuple(args.metric) or DEFAULT_METRICS, setting=args.setting, test=args.test)
    except ValueError as err:
        print(f"masqclip results compare: {err}", file=sys.stderr)
        return 2
    table = table.dropna(axis=1, how="all")
    print(f"pipeline run {parent}: {len(table)} evaluation runs")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}") if len(table) else "(none)")
    return 0
