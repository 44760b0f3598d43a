"""Evaluate a trained model on test sets and write the metrics JSON the result tables read:

  {"dataset": NAME, "config": FILE, "weights": FILE, "results": {"segm"|"panoptic_seg"|"sem_seg"|"proposals": {...}}}

Datasets: every --dataset given, else DATASETS.TEST. With one dataset --output is that file; with
several, one file per dataset named <output stem>.<dataset>.json. Eval-time switches are config
overrides (MODEL.MASK_FORMER.TEST.*, MODEL.MASQ_CLIP.USE_OBJECT_SCORE, ...). The job is one MLflow
run per dataset (tags job=eval, dataset), never fatal.

example:
  masqclip eval --config-file config/models/synthetic/tuning.yaml --dataset synthetic_instance_val_all \\
      --output results/metrics/generalized.json MODEL.WEIGHTS results/models/tuning/model_final.pth
"""
from __future__ import annotations

from ._common import add_config_arguments, config_from_args

COMMAND = "eval"
HELP = "evaluate MODEL.WEIGHTS on test sets and write a metrics JSON"


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME",
                        help="test set (repeatable); default: DATASETS.TEST")
    parser.add_argument("--output", default="", metavar="FILE",
                        help="metrics JSON (default OUTPUT_DIR/metrics.json)")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="MLflow run tag, repeatable")
    parser.add_argument("--experiment", default="", help="MLflow experiment (as for train)")
    add_config_arguments(parser)


def output_paths(output: str, datasets: list[str]) -> dict[str, str]:
    """Metrics file per dataset: ``output`` itself for one, ``<stem>.<dataset>.json`` for several."""
    if len(datasets) == 1:
        return {datasets[0]: output}
    stem = output[:-len(".json")] if output.endswith(".json") else output
    return {name: f"{stem}.{name}.json" for name in datasets}


def main(args) -> int:
    import json
    import os

    from ..data.catalog import DatasetCatalog
    from ..engine.checkpointer import load_model_weights
    from ..engine.defaults import default_setup, evaluate_datasets
    from ..errors import UserError
    from ..modeling import build_model
    from ..tracking import Tracker, data_tags, default_tags, flatten_metrics, non_default_params, parse_tags, run_name
    from ..modeling.bf16 import apply_test_precision
    from ..utils.env import resolve_device

    cfg = config_from_args(args)
    datasets = list(args.dataset) or list(cfg.DATASETS.TEST)
    if not datasets:
        raise UserError("masqclip eval: no dataset: pass --dataset NAME or set DATASETS.TEST")
    if not cfg.MODEL.WEIGHTS:
        raise UserError("masqclip eval: MODEL.WEIGHTS is not set (the checkpoint to evaluate)")
    DatasetCatalog.require(*datasets)  # a misspelt name fails now, not after the model is built
    try:
        extra_tags = parse_tags(args.tag)
    except ValueError as err:
        raise UserError(str(err)) from None
    cfg = default_setup(cfg, rank=0)
    model = build_model(cfg).to(resolve_device(cfg.MODEL.DEVICE))
    load_model_weights(model, cfg.MODEL.WEIGHTS, strict=True)  # a partial checkpoint would score a random model
    apply_test_precision(cfg, model)
    outputs = output_paths(args.output or os.path.join(cfg.OUTPUT_DIR, "metrics.json"), datasets)
    for name in datasets:
        tracker = Tracker.from_config(cfg, experiment=args.experiment)
        tags = default_tags(cfg, job="eval", dataset=name, extra=extra_tags)
        tracker.start(run_name=run_name(tags), tags=tags, params=non_default_params(cfg))
        try:
            results = evaluate_datasets(cfg, model, [name], os.path.join(cfg.OUTPUT_DIR, "inference"))[name]
        except BaseException:
            tracker.end("FAILED")
            raise
        record = {"dataset": name, "config": args.config_file, "weights": cfg.MODEL.WEIGHTS, "results": results,
                  "data": data_tags([name]).get(f"data.{name}", "")}  # the preparation manifest it was scored on
        path = outputs[name]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
        print(json.dumps(record, indent=2))
        tracker.log_metrics(flatten_metrics(results))
        tracker.log_artifact(path)
        tracker.log_artifact(os.path.join(cfg.OUTPUT_DIR, "config.yaml"))  # the full config
        tracker.log_datasets([name], "evaluation")
        tracker.end()
    return 0
