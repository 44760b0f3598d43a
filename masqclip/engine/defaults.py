"""Default job set-up (output dir, logging, seed, config dump) and the assembled training run.

``run_training`` is what ``masqclip train`` calls once the model and loader exist; tests call it
with toy models, so it depends only on the contracts of docs/architecture.md.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Iterable

import torch
from torch import nn

from ..checkpoint.provenance import checkpoint_metadata
from ..tracking import Tracker, flatten_metrics
from ..utils.env import seed_all
from ..utils.logger import get_logger, setup_logger
from ..utils.precision import amp_from_config
from .checkpointer import Checkpointer
from .hooks import EvalHook, IterationSeed, LRSchedulerHook, MetricsWriter, MLflowWriter, NanGuard, PeriodicCheckpointer
from .launch import broadcast_object, get_rank, get_world_size, synchronize
from .optim import build_grad_clipper, build_lr_scheduler, build_optimizer
from .trainer import AMPTrainer, HookBase, SimpleTrainer

CONFIG_DUMP = "config.yaml"
CURVE_PLOT = "training_curve.png"
TRAIN_METRICS = "train_metrics.json"


def default_setup(cfg, *, rank: int | None = None):
    """Create OUTPUT_DIR, set up logging, fix the seed, apply ``CUDNN_BENCHMARK`` and write ``config.yaml`` (rank 0).

    Args:
        cfg: the job's config; ``SEED < 0`` draws one seed on rank 0 and shares it with every rank.
        rank: this process's rank (default: from torch.distributed).

    Returns:
        A frozen copy of ``cfg`` whose SEED is the seed used. Each rank seeds with SEED + rank.
    """
    rank = get_rank() if rank is None else rank
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logger = setup_logger(cfg.OUTPUT_DIR, rank=rank)
    seed = cfg.SEED if cfg.SEED >= 0 else broadcast_object(seed_all(-1) if rank == 0 else None)
    cfg = cfg.clone().defrost()
    cfg.SEED = int(seed)
    cfg.freeze()
    seed_all(cfg.SEED + rank)
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN_BENCHMARK)
    if rank == 0:
        with open(os.path.join(cfg.OUTPUT_DIR, CONFIG_DUMP), "w", encoding="utf-8") as fh:
            fh.write(cfg.dump())
    logger.info("masqclip job: output %s, seed %d, rank %d of %d, torch %s", cfg.OUTPUT_DIR, cfg.SEED, rank,
                get_world_size(), torch.__version__)
    return cfg


def build_trainer(cfg, *, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                  device: torch.device) -> tuple[SimpleTrainer, torch.amp.GradScaler | None]:
    """A SimpleTrainer, or an AMPTrainer when ``SOLVER.AMP`` resolves to a lower precision on ``device``
    (see ``masqclip.utils.precision.resolve_amp``; a notice is logged when AMP cannot be used as asked).

    Returns:
        (trainer, grad scaler or None); the scaler exists for float16 AMP only.
    """
    clipper = build_grad_clipper(cfg)
    amp = amp_from_config(cfg, device)
    if amp.notice:
        get_logger("engine").warning(amp.notice)
    if not amp.enabled:
        return SimpleTrainer(model=model, data_loader=data_loader, optimizer=optimizer, grad_clipper=clipper), None
    scaler = torch.amp.GradScaler(device.type) if amp.grad_scaler else None
    trainer = AMPTrainer(model=model, data_loader=data_loader, optimizer=optimizer, grad_clipper=clipper,
                         dtype=amp.dtype, grad_scaler=scaler, device_type=amp.device_type)
    get_logger("engine").info("mixed precision: %s autocast on %s%s", amp.name, amp.device_type,
                              " with a gradient scaler" if scaler else "")
    return trainer, scaler


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def _plot_curve(output_dir: str) -> None:
    """``training_curve.png`` from ``metrics.jsonl`` (an MLflow artifact; a failure only warns)."""
    try:
        from ..results.plots import plot_training_curves

        plot_training_curves({"train": os.path.join(output_dir, MetricsWriter.FILENAME)},
                             os.path.join(output_dir, CURVE_PLOT), title=os.path.basename(output_dir.rstrip("/")))
    except Exception as err:  # noqa: BLE001 - a plot must never fail a finished training job
        get_logger("engine").warning("could not plot the training curve: %s", err)


def evaluate_datasets(cfg, model: nn.Module, dataset_names: Iterable[str], output_dir: str | None = None) -> dict:
    """``{dataset: evaluator results}``: build_test_loader + build_evaluator + inference_on_dataset each.

    Args:
        model: the (unwrapped) model; put in eval mode during inference, restored after. It runs
            under ``TEST.AMP`` autocast when that resolves to a lower precision on its device.
        output_dir: evaluators write their files under ``output_dir/<dataset>`` ("" / None: nowhere).
    """
    from ..data.build import build_test_loader
    from ..evaluation import build_evaluator, inference_on_dataset

    amp = amp_from_config(cfg, next(model.parameters()).device, inference=True)
    if amp.notice:
        get_logger("engine").warning(amp.notice)
    results = {}
    for name in dataset_names:
        folder = os.path.join(output_dir, name) if output_dir else None
        evaluator = build_evaluator(cfg, name, folder)
        if hasattr(model, "set_dataset_vocabulary"):  # open-vocabulary models classify with each set's classes
            model.set_dataset_vocabulary(name)
        results[name] = inference_on_dataset(model, build_test_loader(cfg, name), evaluator,
                                             log_period=cfg.TEST.INFERENCE_LOG_PERIOD,
                                             autocast=amp.autocast if amp.enabled else None)
    return results


def run_training(cfg, *, model: nn.Module, build_loader: Callable[[int, int, int], Iterable],
                 device: torch.device | None = None, resume: bool = False, tracker: Tracker | None = None,
                 eval_function: Callable[[], dict] | None = None, progress_bar: bool | None = None,
                 extra_hooks: Iterable[HookBase] = ()) -> dict:
    """Train ``model`` for ``SOLVER.MAX_ITER`` iterations with checkpoints, logging and tracking.

    Args:
        cfg: the set-up config (see ``default_setup``).
        model: on ``device``, not yet wrapped; wrapped in DDP here when the process group has > 1 rank.
        build_loader: ``(start_iter, rank, world_size) -> iterable of batches`` (each rank gets
            ``SOLVER.IMS_PER_BATCH / world_size`` images of the global batch).
        device: the model's device (default: of its first parameter).
        resume: continue from ``OUTPUT_DIR/last_checkpoint`` if there is one; else load ``MODEL.WEIGHTS``.
        tracker: a started Tracker (rank 0) or None; ended here (FINISHED, or FAILED on an exception).
        eval_function: ``() -> {task: {metric: value}}`` run every ``TEST.EVAL_PERIOD`` and at the end.
        progress_bar: None = a tqdm bar when stderr is a terminal.
        extra_hooks: appended after the default hooks.

    Returns:
        The final metrics, also written to ``OUTPUT_DIR/train_metrics.json``: the last metrics row,
        the evaluation results (flattened), iterations and wall time.
    """
    rank, world = get_rank(), get_world_size()
    device = device or next(model.parameters()).device
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by {world} processes")
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=cfg.SOLVER.DDP_FIND_UNUSED_PARAMETERS)
    trainer, scaler = build_trainer(cfg, model=trained, data_loader=(), optimizer=optimizer, device=device)
    checkpointer = Checkpointer(model=model, output_dir=cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=scheduler,
                                scaler=scaler, keep=cfg.SOLVER.CHECKPOINTS_TO_KEEP)
    checkpointer.metadata = checkpoint_metadata(cfg)  # the config and the CLIP weights' identity, for inference
    start_iter = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    trainer.data_loader = build_loader(start_iter, rank, world)
    tracker = tracker or Tracker(enabled=False)
    eval_hook = EvalHook(period=cfg.TEST.EVAL_PERIOD, eval_function=eval_function) if eval_function else None
    writer = MetricsWriter(output_dir=cfg.OUTPUT_DIR, period=cfg.SOLVER.LOG_PERIOD, seconds=cfg.SOLVER.LOG_SECONDS,
                           progress_bar=progress_bar) if rank == 0 else None
    trainer.register_hooks([IterationSeed(seed=cfg.SEED, rank=rank), NanGuard(checkpointer=checkpointer), LRSchedulerHook(scheduler=scheduler),
                            eval_hook, writer,
                            MLflowWriter(tracker=tracker, source=writer) if writer and tracker.active else None,
                            PeriodicCheckpointer(checkpointer=checkpointer, period=cfg.SOLVER.CHECKPOINT_PERIOD),
                            *extra_hooks])
    start = time.perf_counter()
    try:
        trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
    except BaseException:
        tracker.end("FAILED")
        raise
    final = dict(writer.last_row or {}) if writer else {}
    final.update(flatten_metrics(eval_hook.results) if eval_hook else {})
    final.update(iterations=cfg.SOLVER.MAX_ITER, start_iter=start_iter, wall_seconds=time.perf_counter() - start)
    if rank == 0:
        path = os.path.join(cfg.OUTPUT_DIR, TRAIN_METRICS)
        _write_json(path, {"config": os.path.join(cfg.OUTPUT_DIR, CONFIG_DUMP), "metrics": final,
                           "eval": eval_hook.results if eval_hook else {}})
        tracker.log_metrics({k: v for k, v in final.items() if k != "iteration"}, step=cfg.SOLVER.MAX_ITER)
        if tracker.active:
            _plot_curve(cfg.OUTPUT_DIR)
        for name in (CONFIG_DUMP, MetricsWriter.FILENAME, TRAIN_METRICS, CURVE_PLOT):
            tracker.log_artifact(os.path.join(cfg.OUTPUT_DIR, name))
        tracker.log_image(os.path.join(cfg.OUTPUT_DIR, CURVE_PLOT), key="training_curve", step=cfg.SOLVER.MAX_ITER)
        tracker.log_datasets(list(cfg.DATASETS.TRAIN), "training")
    tracker.end("FINISHED")
    synchronize()
    return final
