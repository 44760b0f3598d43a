"""Evaluate a trained model on test sets and write the metrics JSON the result tables read:

  {"dataset": NAME, "config": FILE, "weights": FILE, "results": {"segm"|"panoptic_seg"|"sem_seg"|"proposals": {...}}}

Datasets: every --dataset given, else DATASETS.TEST. With one dataset --output is that file; with
several, one file per dataset named <output stem>.<dataset>.json. Eval-time switches are config
overrides (MODEL.MASK_FORMER.TEST.*, MODEL.MASQ_CLIP.USE_OBJECT_SCORE, ...). The job is one MLflow
run per dataset (tags job=eval, dataset), never fatal.

Several evaluations, each with its own config file and overrides, in one process: --spec JSON
(or --spec @FILE), a list of {"config_file": FILE, "dataset": NAME, "output": FILE,
"opts": [KEY, VALUE, ...], "tags": {KEY: VALUE}}. The model is built and its weights loaded once
for evaluations whose configs differ only in test-time post-processing (thresholds, the
*_ON outputs, the detections per image, the object score, the test set and vocabulary, OUTPUT_DIR);
it is rebuilt where anything else differs. One MLflow run and one metrics JSON per evaluation, as
if each ran alone. The workflow runs one such job per trained model.

example:
  masqclip eval --config-file config/models/synthetic/tuning.yaml --dataset synthetic_instance_val_all \\
      --output results/metrics/generalized.json MODEL.WEIGHTS results/models/tuning/model_final.pth
  masqclip eval --spec '[{"config_file": "config/models/synthetic/tuning.yaml",
      "dataset": "synthetic_instance_val_all", "output": "no_obj.json",
      "opts": ["MODEL.WEIGHTS", "model_final.pth", "MODEL.MASQ_CLIP.USE_OBJECT_SCORE", "False"]}, ...]'
"""
from __future__ import annotations

from ._common import add_config_arguments, config_from_args

COMMAND = "eval"
HELP = "evaluate MODEL.WEIGHTS on test sets and write a metrics JSON"

# Config keys that only the post-processing of a built model reads (the model's
# ``reconfigure_for_test`` sets them): evaluations differing in nothing else share one model.
TEST_TIME_KEYS = (
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD",
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD",
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON",
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE",
    "TEST.DETECTIONS_PER_IMAGE",
    "MODEL.MASQ_CLIP.USE_OBJECT_SCORE",
    "DATASETS.TEST",
    "OUTPUT_DIR",
)
SPEC_KEYS = {"config_file", "dataset", "output", "opts", "tags"}


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME",
                        help="test set (repeatable); default: DATASETS.TEST")
    parser.add_argument("--output", default="", metavar="FILE",
                        help="metrics JSON (default OUTPUT_DIR/metrics.json)")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="MLflow run tag, repeatable")
    parser.add_argument("--experiment", default="", help="MLflow experiment (as for train)")
    parser.add_argument("--spec", default="", metavar="JSON|@FILE",
                        help="several evaluations in one process (a JSON list, see above); replaces "
                             "--config-file, --dataset, --output and KEY VALUE")
    add_config_arguments(parser)


def output_paths(output: str, datasets: list[str]) -> dict[str, str]:
    """Metrics file per dataset: ``output`` itself for one, ``<stem>.<dataset>.json`` for several."""
    if len(datasets) == 1:
        return {datasets[0]: output}
    stem = output[:-len(".json")] if output.endswith(".json") else output
    return {name: f"{stem}.{name}.json" for name in datasets}


def parse_spec(text: str) -> list[dict]:
    """The evaluations of ``--spec`` (JSON text, or ``@FILE``), checked; raises ``UserError`` naming the
    evaluation and the key that is wrong."""
    import json

    from ..errors import UserError

    source = "--spec"
    if text.startswith("@"):
        source = text[1:]
        try:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as err:
            raise UserError(f"masqclip eval --spec: cannot read {source}: {err.strerror or err}") from None
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise UserError(f"masqclip eval: {source} is not valid JSON: {err}") from None
    if not isinstance(spec, list) or not spec:
        raise UserError(f"masqclip eval: {source} must be a non-empty JSON list of evaluations")
    outputs = set()
    for i, item in enumerate(spec):
        where = f"masqclip eval: {source}[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{where} must be an object with keys {sorted(SPEC_KEYS)}")
        unknown = sorted(set(item) - SPEC_KEYS)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {unknown} (known: {sorted(SPEC_KEYS)})")
        for key in ("config_file", "dataset", "output"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise UserError(f"{where}.{key} must be a non-empty string")
        opts = item.get("opts", [])
        if not isinstance(opts, list) or len(opts) % 2 or not all(isinstance(o, str) for o in opts):
            raise UserError(f"{where}.opts must be a list of strings KEY, VALUE, ... (an even number)")
        tags = item.get("tags", {})
        if not isinstance(tags, dict) or not all(isinstance(v, (str, int, float)) for v in tags.values()):
            raise UserError(f"{where}.tags must be an object of KEY: VALUE strings")
        if item["output"] in outputs:
            raise UserError(f"{where}.output: {item['output']!r} is written by an earlier evaluation too")
        outputs.add(item["output"])
    return spec


def model_key(cfg) -> str:
    """What decides a built model (its config without the test-time keys): equal keys share a model."""
    clone = cfg.clone().defrost()
    for key in TEST_TIME_KEYS:
        *path, leaf = key.split(".")
        node = clone
        for part in path:
            node = getattr(node, part)
        setattr(node, leaf, None)
    return clone.dump()


def main(args) -> int:
    import argparse

    from ..errors import UserError

    if not args.spec:
        jobs = [dict(config_file=args.config_file, datasets=list(args.dataset), output=args.output, opts=args.opts,
                     tags=list(args.tag))]
    else:
        if args.config_file or args.dataset or args.output or args.opts:
            raise UserError("masqclip eval: --spec replaces --config-file, --dataset, --output and KEY VALUE; "
                            "give either --spec or those")
        jobs = [dict(config_file=e["config_file"], datasets=[e["dataset"]], output=e["output"],
                     opts=list(e.get("opts", [])),
                     tags=list(args.tag) + [f"{k}={v}" for k, v in e.get("tags", {}).items()])
                for e in parse_spec(args.spec)]
    cfgs = [config_from_args(argparse.Namespace(config_file=j["config_file"], opts=j["opts"])) for j in jobs]
    for job, cfg in zip(jobs, cfgs):  # every evaluation checked before the first model is built
        _check(job, cfg)
    built = None  # (model key, model)
    for job, cfg in zip(jobs, cfgs):
        built = _evaluate(job, cfg, args.experiment, built)
    return 0


def _check(job: dict, cfg) -> None:
    from ..data.catalog import DatasetCatalog
    from ..errors import UserError
    from ..tracking import parse_tags

    job["datasets"] = job["datasets"] or list(cfg.DATASETS.TEST)
    if not job["datasets"]:
        raise UserError("masqclip eval: no dataset: pass --dataset NAME or set DATASETS.TEST")
    if not cfg.MODEL.WEIGHTS:
        raise UserError("masqclip eval: MODEL.WEIGHTS is not set (the checkpoint to evaluate)")
    DatasetCatalog.require(*job["datasets"])  # a misspelt name fails now, not after the model is built
    try:
        job["tag_dict"] = parse_tags(job["tags"])
    except ValueError as err:
        raise UserError(str(err)) from None


def _evaluate(job: dict, cfg, experiment: str, built):
    """One evaluation (one MLflow run and metrics file per dataset); reuses ``built`` = (key, model)
    when only test-time keys differ. Returns the (key, model) it used."""
    import json
    import os

    from ..engine.checkpointer import load_model_weights
    from ..engine.defaults import default_setup, evaluate_datasets
    from ..modeling import build_model
    from ..modeling.bf16 import apply_test_precision
    from ..tracking import Tracker, data_tags, default_tags, flatten_metrics, non_default_params, run_name
    from ..utils.env import resolve_device
    from ..utils.logger import get_logger

    key = model_key(cfg)  # before the set-up draws a seed for SEED -1: equal configs share the model
    cfg = default_setup(cfg, rank=0)  # seeds as a fresh process would, before any build
    if built is not None and built[0] == key:
        model = built[1]
        model.reconfigure_for_test(cfg)
        get_logger("eval").info("model reused: only test-time options differ from the previous evaluation")
    else:
        built = None  # free the previous model before building the next
        model = build_model(cfg).to(resolve_device(cfg.MODEL.DEVICE))
        load_model_weights(model, cfg.MODEL.WEIGHTS, strict=True)  # a partial checkpoint would score a random model
        apply_test_precision(cfg, model)
    datasets = job["datasets"]
    outputs = output_paths(job["output"] or os.path.join(cfg.OUTPUT_DIR, "metrics.json"), datasets)
    for name in datasets:
        tracker = Tracker.from_config(cfg, experiment=experiment)
        tags = default_tags(cfg, job="eval", dataset=name, extra=job["tag_dict"])
        tracker.start(run_name=run_name(tags), tags=tags, params=non_default_params(cfg))
        try:
            results = evaluate_datasets(cfg, model, [name], os.path.join(cfg.OUTPUT_DIR, "inference"))[name]
        except BaseException:
            tracker.end("FAILED")
            raise
        record = {"dataset": name, "config": job["config_file"], "weights": cfg.MODEL.WEIGHTS, "results": results,
                  "data": data_tags([name]).get(f"data.{name}", "")}  # the preparation manifest it was scored on
        path = outputs[name]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
        os.replace(tmp, path)  # a killed job never leaves a half-written metrics file
        print(json.dumps(record, indent=2))
        tracker.log_metrics(flatten_metrics(results))
        tracker.log_artifact(path)
        tracker.log_artifact(os.path.join(cfg.OUTPUT_DIR, "config.yaml"))  # the full config
        tracker.log_datasets([name], "evaluation")
        tracker.end()
    return key, model
