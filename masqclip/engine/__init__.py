"""Training engine: trainer (run_step only), hooks, optimizer/schedules, checkpoints, launch, job set-up."""
from .checkpointer import Checkpointer
from .defaults import build_trainer, default_setup, run_training
from .hooks import EvalHook, LRSchedulerHook, MetricsWriter, MLflowWriter, NanGuard, PeriodicCheckpointer
from .launch import detect_env, get_rank, get_world_size, init_distributed, is_main_process, launch
from .optim import WarmupLR, build_grad_clipper, build_lr_scheduler, build_optimizer, get_param_groups
from .trainer import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "AMPTrainer", "Checkpointer", "EvalHook", "HookBase", "LRSchedulerHook", "MLflowWriter", "MetricsWriter",
    "NanGuard", "PeriodicCheckpointer", "SimpleTrainer", "TrainerBase", "WarmupLR", "build_grad_clipper",
    "build_lr_scheduler", "build_optimizer", "build_trainer", "default_setup", "detect_env", "get_param_groups",
    "get_rank", "get_world_size", "init_distributed", "is_main_process", "launch", "run_training",
]
