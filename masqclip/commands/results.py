"""Build the result tables and plots from the metrics files of a workflow run.

  masqclip results tables --output-dir results/tables --settings base-novel cross-dataset \
      --rounds 2 --ablations '{"rounds": {...}}' [--paper] [--miou-convention gt|d2v06] METRICS.json ...
  masqclip results plots --output-dir results/plots --settings base-novel --rounds 2 \
      --train base-novel/teacher=results/models/.../metrics.jsonl ... [--clip-weights tiny.pt] METRICS.json ...
  masqclip results front-page --output results/report/front.html TABLE.html ... PLOT.png ...
  masqclip results compare [--invocation ID] [--setting base-novel] [--test generalized] [--metric segm/AP50_novel]

Metrics files must sit at ``.../<setting>/<variant>/<test>.json`` (the workflow's layout).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

COMMAND = "results"
HELP = "write result tables (md/tex/csv/html) or plots (png) from metrics files"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, help_text in (("tables", "Markdown, LaTeX and CSV tables in the paper's layout"),
                            ("plots", "training curves, base vs novel, CLIP zero-shot accuracy")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--output-dir", required=True, help="folder to write into (created)")
        p.add_argument("--settings", nargs="+", required=True, help="settings of the run (base-novel, cross-dataset)")
        p.add_argument("--rounds", type=int, required=True, help="distillation rounds K of the run")
        p.add_argument("--ablations", type=json.loads, default={}, help="the config's 'ablations' mapping, as JSON")
        p.add_argument("metrics", nargs="*", help="metrics JSONs written by 'masqclip eval'")
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
    tables = sub.choices["tables"]
    tables.add_argument("--paper", action="store_true", help="add the paper's numbers and our difference to them")
    tables.add_argument("--miou-convention", choices=("gt", "d2v06"), default="gt",
                        help="semantic mIoU in the tables: over ground-truth classes (gt, detectron2 since "
                             "2022-07) or detectron2 v0.6's (d2v06); default %(default)s")
    plots = sub.choices["plots"]
    plots.add_argument("--train", action="append", default=[], metavar="SETTING/STAGE=METRICS_JSONL",
                       help="a training curve (repeat; panels keep this order)")
    plots.add_argument("--clip-weights", default="", help="small CLIP checkpoint; its metrics JSON lies beside it")


def main(args: argparse.Namespace) -> int:
    if args.what == "front-page":
        return _front_page(args)
    if args.what == "compare":
        return _compare(args)
    from ..results import build_tables, load_metrics, write_tables

    metrics = load_metrics(args.metrics)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "tables":
        tables = build_tables(metrics, settings=args.settings, ablations=args.ablations, rounds=args.rounds,
                              paper=args.paper, miou_convention=args.miou_convention)
        for path in write_tables(tables, out):
            print(path)
        return 0
    from ..results import plots

    curves: dict[str, dict[str, str]] = {s: {} for s in args.settings}
    for item in args.train:
        label, _, path = item.partition("=")
        setting, _, stage = label.partition("/")
        curves.setdefault(setting, {})[stage] = path
    for name in plots.planned_plots(args.settings, bool(args.clip_weights)):
        target = out / name
        if name.startswith("training_"):
            setting = name[len("training_"):-len(".png")]
            plots.plot_training_curves(curves.get(setting, {}), target, f"training ({setting})")
        elif name.startswith("base_novel_"):
            test = args.ablations.get("rounds", {}).get("test", "generalized")
            plots.plot_base_novel(metrics, setting="base-novel", rounds=args.rounds, test=test, output=target)
        else:
            plots.plot_clip_zero_shot(plots.clip_metrics_file(args.clip_weights), target)
        print(target)
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
