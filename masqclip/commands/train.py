"""Train one stage of MasQCLIP from a config: the teacher (META_ARCHITECTURE MaskFormer), a student
round (MaskDistill: its frozen teacher is loaded from MODEL.DISTILL.TEACHER_WEIGHTS, else
MODEL.WEIGHTS) or MasQ-Tuning (MasQTuning).

Writes into OUTPUT_DIR: config.yaml, log.txt, metrics.jsonl (a row every SOLVER.LOG_PERIOD
iterations), periodic checkpoints (SOLVER.CHECKPOINT_PERIOD, the last SOLVER.CHECKPOINTS_TO_KEEP
kept), last_checkpoint, model_final.pth and train_metrics.json; metrics_log.jsonl (the rows as they
come) and mlflow_run_id. --resume continues an interrupted run from its newest checkpoint with the
same result, and its MLflow run; otherwise MODEL.WEIGHTS is loaded first.

Data parallel: --num-gpus N starts N local processes (gloo on CPU, nccl on CUDA); under torchrun or
a multi-task SLURM step, the launcher's processes are used instead. SOLVER.IMS_PER_BATCH is the
global batch. Tracked in MLflow (TRACKING.*, $MLFLOW_TRACKING_URI); tracking never stops training.

example:
  masqclip train --config-file config/models/synthetic/teacher.yaml --resume \\
      --tag setting=base-novel --tag round=0 OUTPUT_DIR results/models/teacher SOLVER.MAX_ITER 100
"""
from __future__ import annotations

from ._common import add_config_arguments, config_from_args

COMMAND = "train"
HELP = "train a teacher, student round or MasQ-Tuning model from a config"


def add_arguments(parser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint when it exists (else start anew)")
    parser.add_argument("--num-gpus", type=int, default=1, metavar="N",
                        help="local processes to start (one per GPU; on CPU: gloo processes). Default 1")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="MLflow run tag, repeatable (setting, stage, round, ...)")
    parser.add_argument("--experiment", default="", help="MLflow experiment (default TRACKING.EXPERIMENT, "
                        "$MLFLOW_EXPERIMENT_NAME, else 'masqclip')")
    add_config_arguments(parser)


def main(args) -> int:
    from ..data.catalog import DatasetCatalog
    from ..engine.launch import launch
    from ..errors import UserError
    from ..tracking import parse_tags

    # what can be checked before processes start is checked here: an error in a spawned worker
    # would reach the user wrapped in the launcher's traceback
    try:
        parse_tags(args.tag)
    except ValueError as err:
        raise UserError(str(err)) from None
    cfg = config_from_args(args)
    DatasetCatalog.require(*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)
    return int(launch(train_worker, args.num_gpus, (args,)) or 0)


def train_worker(args) -> int:
    """One training process (rank from the environment)."""
    import os

    from ..data.build import build_train_loader
    from ..engine.defaults import default_setup, evaluate_datasets, run_training
    from ..engine.launch import detect_env, init_distributed, is_main_process
    from ..modeling import build_model
    from ..tracking import (RUN_ID_FILE, Tracker, default_tags, non_default_params, parse_tags, read_run_id, run_name,
                            write_run_id)
    from ..utils.env import resolve_device

    cfg = config_from_args(args)
    device = init_distributed(detect_env(), resolve_device(cfg.MODEL.DEVICE))
    cfg = default_setup(cfg)
    model = build_model(cfg).to(device)
    if cfg.MODEL.META_ARCHITECTURE == "MaskDistill":
        model.load_teacher(cfg.MODEL.DISTILL.TEACHER_WEIGHTS or cfg.MODEL.WEIGHTS)
    tags = default_tags(cfg, job="train", extra=parse_tags(args.tag))
    tracker = Tracker.from_config(cfg, enabled=is_main_process(), experiment=args.experiment)
    run_file = os.path.join(cfg.OUTPUT_DIR, RUN_ID_FILE)
    earlier = read_run_id(run_file) if args.resume else None
    tracker.start(run_name=run_name(tags), tags=tags, params=non_default_params(cfg),  # full config: artifact
                  continue_run=earlier)
    if tracker.active and tracker.run_id != earlier:
        write_run_id(run_file, tracker.run_id)
    eval_function = None
    if cfg.TEST.EVAL_PERIOD > 0 and cfg.DATASETS.TEST:
        def eval_function():
            return evaluate_datasets(cfg, model, cfg.DATASETS.TEST, os.path.join(cfg.OUTPUT_DIR, "inference"))

    def build_loader(start_iter: int, rank: int, world_size: int):
        return build_train_loader(cfg, start_iter=start_iter, rank=rank, world_size=world_size)

    run_training(cfg, model=model, build_loader=build_loader, device=device, resume=args.resume,
                 tracker=tracker, eval_function=eval_function)
    return 0
