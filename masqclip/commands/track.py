"""MLflow store upkeep: create the store before jobs start, and replay metrics files into it.

  masqclip track init [--uri URI] [--experiment NAME]
      Creates (or migrates) a SQLite store and the experiment, once, under a file lock. Jobs that
      start together on a new store then never race in its schema migration. The workflow runs it
      before its first job; a server store is left alone.
  masqclip track replay FILE ... [--run-id ID] [--run-name NAME] [--tag KEY=VALUE ...]
      Sends a job's metrics files (metrics.jsonl or metrics_log.jsonl, train_metrics.json, an eval
      metrics JSON) to MLflow: into the job's own run (the mlflow_run_id file beside the first
      file) when the store has it, else into a new run. Values the run already has are skipped.

The store is --uri, else $MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db; the experiment
--experiment, else $MLFLOW_EXPERIMENT_NAME, else 'masqclip'.

example:
  masqclip track replay results/models/base-novel/teacher-0123456789/metrics_log.jsonl \\
      results/models/base-novel/teacher-0123456789/train_metrics.json
"""
from __future__ import annotations

COMMAND = "track"
HELP = "create the MLflow store, or replay a job's metrics files into it"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    init = sub.add_parser("init", help="create or migrate the store (SQLite) and the experiment")
    replay = sub.add_parser("replay", help="send a job's metrics files to MLflow")
    replay.add_argument("files", nargs="+", metavar="FILE", help="metrics.jsonl, train_metrics.json, eval JSON")
    replay.add_argument("--run-id", default="", help="the run to add to (default: the job's own, else a new one)")
    replay.add_argument("--run-name", default="", help="name of a new run (default: replay-<folder>)")
    replay.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="run tag, repeatable")
    for p in (init, replay):
        p.add_argument("--uri", default="", help="tracking URI (default $MLFLOW_TRACKING_URI, else the SQLite default)")
        p.add_argument("--experiment", default="", help="experiment (default $MLFLOW_EXPERIMENT_NAME, else 'masqclip')")


def main(args) -> int:
    import os

    from ..errors import UserError
    from ..tracking import DEFAULT_URI, init_store, parse_tags, replay_metrics

    if args.what == "init":
        uri = args.uri or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_URI
        print(init_store(uri, args.experiment))
        return 0
    try:
        tags = parse_tags(args.tag)
        run_id, count = replay_metrics(args.files, uri=args.uri, experiment=args.experiment, run_id=args.run_id,
                                       run_name=args.run_name, tags=tags)
    except (OSError, ValueError) as err:  # an unreadable or malformed metrics file, a bad --tag
        raise UserError(f"track replay: {err}") from err
    print(f"sent {count} metric values to run {run_id}")
    return 0
