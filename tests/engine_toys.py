"""Toy model, loader and config for the engine tests (not a test module).

The toy model follows the model contract of docs/architecture.md: a list of per-image dicts in,
a dict of scalar losses out in training. Its loader derives every global batch from (seed, iteration)
and gives rank r the images r::world_size, as ``build_train_loader`` does.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from masqclip.config import get_cfg
from masqclip.engine.defaults import default_setup, run_training
from masqclip.engine.trainer import HookBase

DIM, HIDDEN, QUERIES = 4, 8, 3


class ToyModel(nn.Module):
    """Regresses sum(x) with a backbone, a norm, an embedding and a level-embed parameter."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.LayerNorm(HIDDEN), nn.ReLU())
        self.query_embed = nn.Embedding(QUERIES, HIDDEN)
        self.level_embed = nn.Parameter(torch.zeros(HIDDEN))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(HIDDEN, 1)

    def forward(self, batch: list[dict]):
        x = torch.stack([d["x"] for d in batch])
        h = self.drop(self.backbone(x)) + self.query_embed.weight.mean(0) + self.level_embed
        pred = self.head(h).squeeze(-1)
        if not self.training:
            return [{"pred": p} for p in pred]
        y = torch.stack([d["y"] for d in batch])
        return {"loss_mse": ((pred - y) ** 2).mean(), "loss_l1": 0.1 * (pred - y).abs().mean(),
                "toy/pred_mean": pred.detach().mean() + 100.0}  # a metric: logged, never added to the loss


def toy_batches(*, seed: int, global_batch: int, start_iter: int = 0, rank: int = 0, world_size: int = 1,
                bad_iters: tuple[int, ...] = ()):
    """Infinite batches; the global batch of iteration i depends on (seed, i) only.

    ``bad_iters``: iterations whose inputs are inf (to make the loss non-finite).
    """
    it = start_iter
    while True:
        g = torch.Generator().manual_seed(seed * 1_000_003 + it)
        x = torch.randn(global_batch, DIM, generator=g)
        if it in bad_iters:
            x = x * float("inf")
        y = x.sum(1) + 0.1 * torch.randn(global_batch, generator=g)
        yield [{"x": x[i], "y": y[i]} for i in range(global_batch)][rank::world_size]
        it += 1


def toy_cfg(output_dir: str, **overrides):
    """A tiny CPU training config: 12 iterations, checkpoints every 4, logs every 2."""
    cfg = get_cfg()
    opts = {"OUTPUT_DIR": str(output_dir), "SEED": 7, "MODEL.DEVICE": "cpu", "TRACKING.ENABLED": False,
            "SOLVER.MAX_ITER": 12, "SOLVER.BASE_LR": 0.01, "SOLVER.IMS_PER_BATCH": 4, "SOLVER.STEPS": (8,),
            "SOLVER.WARMUP_ITERS": 2, "SOLVER.WARMUP_FACTOR": 0.1, "SOLVER.CHECKPOINT_PERIOD": 4,
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0, "SOLVER.LOG_PERIOD": 2, "SOLVER.LOG_SECONDS": 1e9}
    opts.update(overrides)
    for key, value in opts.items():
        node, parts = cfg, key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return cfg


class SleepHook(HookBase):
    """Slows each step, so a test can kill the run in the middle."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def after_step(self) -> None:
        time.sleep(self.seconds)


class RaiseAt(HookBase):
    """Raises after iteration ``it`` (an interrupted run)."""

    def __init__(self, it: int):
        self.it = it

    def after_step(self) -> None:
        if self.trainer.iter == self.it:
            raise KeyboardInterrupt(f"interrupted after iteration {self.it}")


def run_toy(cfg, *, resume: bool = False, dropout: float = 0.1, bad_iters: tuple[int, ...] = (), tracker=None,
            extra_hooks=(), eval_function=None, progress_bar: bool = False):
    """default_setup + run_training on the toy model; returns (model, final metrics)."""
    cfg = default_setup(cfg)
    model = ToyModel(dropout=dropout)

    def build_loader(start_iter, rank, world_size):
        return toy_batches(seed=cfg.SEED, global_batch=cfg.SOLVER.IMS_PER_BATCH, start_iter=start_iter,
                           rank=rank, world_size=world_size, bad_iters=bad_iters)

    final = run_training(cfg, model=model, build_loader=build_loader, resume=resume, tracker=tracker,
                         progress_bar=progress_bar, extra_hooks=extra_hooks, eval_function=eval_function)
    return model, final


def main_killable(output_dir: str, sleep_s: str) -> None:
    """Entry point of the SIGKILL test's subprocess."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    run_toy(toy_cfg(output_dir), extra_hooks=[SleepHook(float(sleep_s))])


if __name__ == "__main__":
    import sys

    main_killable(*sys.argv[1:3])
    os._exit(0)


def sigkill_once_written(proc: subprocess.Popen, path: Path, *, timeout: float, settle: float = 0.0) -> None:
    """Kill ``proc`` with SIGKILL as soon as ``path`` exists (after ``settle`` more seconds), and reap it.

    Fails, with the process's stderr, if it exits before writing ``path`` or ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    try:
        while not path.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, f"no {path.name} after {timeout:.0f} s"
            time.sleep(0.01)
        time.sleep(settle)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
