"""Trainer hooks: NaN guard, LR schedule, periodic checkpoints, evaluation, metrics/progress, MLflow.

Order matters (``defaults.run_training`` uses this one): the per-iteration seed, then the NaN guard,
so that no later hook saves or logs a non-finite step; the periodic checkpoint last, after the
metrics row of its iteration is written (a run killed in between resumes from the previous
checkpoint and rewrites that row, so no logged iteration is ever skipped).
"""
from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import sys
import time
from typing import Callable

import torch

from ..tracking import Tracker, flatten_metrics
from ..utils.env import seed_iteration
from ..utils.logger import get_logger
from .checkpointer import FINAL_NAME, Checkpointer, periodic_name, unwrap
from .trainer import HookBase


class IterationSeed(HookBase):
    """Seeds the global generators from ``(seed, iteration, rank)`` before every step.

    What a step draws (point sampling in the losses, dropout) then never depends on what ran
    before it, so ``--resume`` after any interruption reproduces an uninterrupted run exactly.
    """

    def __init__(self, *, seed: int, rank: int = 0):
        self.seed, self.rank = int(seed), int(rank)

    def before_step(self) -> None:
        seed_iteration(self.seed, self.trainer.iter, self.rank)


class NanGuard(HookBase):
    """Stops training with ``FloatingPointError`` when a loss term or a trained parameter is NaN/inf
    after a step (checked every step, before any hook can save or log it).

    Args:
        checkpointer: named in the message, so users know which good checkpoint is kept.
    """

    def __init__(self, *, checkpointer: Checkpointer | None = None):
        self.checkpointer = checkpointer

    def after_step(self) -> None:
        losses = self.trainer.last_losses
        bad_losses = {k: v for k, v in losses.items() if not math.isfinite(v)}
        bad_params = non_finite_parameters(self.trainer)
        if not bad_losses and not bad_params:
            return
        last = self.checkpointer.last_checkpoint() if self.checkpointer else None
        terms = ", ".join(f"{k}={v:.6g}" for k, v in sorted(losses.items()))
        what = "loss is" if bad_losses else "parameters are"
        params = f"; non-finite parameters: {', '.join(bad_params[:5])}" if bad_params else ""
        if len(bad_params) > 5:
            params += f" and {len(bad_params) - 5} more"
        raise FloatingPointError(
            f"{what} not finite at iteration {self.trainer.iter}: {terms}{params}. Training stopped; "
            + (f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"))


def non_finite_parameters(trainer) -> list[str]:
    """Names of the optimizer's parameters holding NaN/inf (one device sync for all of them)."""
    params = getattr(trainer, "params", None)
    if not params:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for p in params]).cpu()
    if bool(finite.all()):
        return []
    names = {id(p): n for n, p in unwrap(trainer.model).named_parameters()} if hasattr(trainer, "model") else {}
    return [names.get(id(p), f"parameter {i}") for i, (p, ok) in enumerate(zip(params, finite.tolist())) if not ok]


class LRSchedulerHook(HookBase):
    """Steps the per-iteration LR scheduler after every optimizer step."""

    def __init__(self, *, scheduler):
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class PeriodicCheckpointer(HookBase):
    """``model_{iter:07d}.pth`` every ``period`` iterations, ``model_final.pth`` when training completes."""

    def __init__(self, *, checkpointer: Checkpointer, period: int):
        self.checkpointer, self.period = checkpointer, period

    def after_step(self) -> None:
        it = self.trainer.iter
        if self.period > 0 and (it + 1) % self.period == 0 and it + 1 < self.trainer.max_iter:
            self.checkpointer.save(periodic_name(it), iteration=it)

    def after_train(self) -> None:
        if self.trainer.completed:
            self.checkpointer.save(FINAL_NAME, iteration=self.trainer.max_iter - 1)


class EvalHook(HookBase):
    """Runs ``eval_function() -> {task: {metric: value}}`` every ``period`` iterations and at the end.

    Results are flattened (``"segm/AP50"``) into the trainer's storage, so the writers log them;
    ``self.results`` keeps the latest. ``eval_function`` runs on every rank (it may be collective).
    """

    def __init__(self, *, period: int, eval_function: Callable[[], dict]):
        self.period, self.eval_function = period, eval_function
        self.results: dict = {}

    def _evaluate(self) -> None:
        self.results = self.eval_function() or {}
        flat = flatten_metrics(self.results)
        if flat:
            self.trainer.storage.put_scalars(**flat)

    def after_step(self) -> None:
        it = self.trainer.iter
        if self.period > 0 and (it + 1) % self.period == 0 and it + 1 < self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._evaluate()


def _format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class MetricsWriter(HookBase):
    """Rows of windowed metrics to ``metrics.jsonl``, and progress to the user (main process only).

    A row is written every ``period`` iterations, at the last iteration, and whenever ``seconds``
    passed since the last one: ``{"iteration", each loss term (mean over the window), "lr",
    "data_time", "time" (s/iter), "eta_seconds", any evaluation metric recorded in the window}``.
    Progress is a tqdm bar (loss, ETA) when ``progress_bar``, else one log line per row.

    Rows are appended to ``metrics_log.jsonl`` as they come and copied to ``metrics.jsonl`` when
    training ends (finished or stopped). The live log is never a workflow output, so a job that a
    workflow manager re-runs after an interruption (deleting its declared outputs) still has every
    row: a resumed run drops the rows after its checkpoint and continues the log.

    Args:
        output_dir: folder of both files.
        period, seconds: row frequency.
        progress_bar: None = a bar exactly when stderr is a terminal.
    """

    FILENAME = "metrics.jsonl"
    LIVE_FILENAME = "metrics_log.jsonl"

    def __init__(self, *, output_dir: str, period: int, seconds: float, progress_bar: bool | None = None):
        self.final_path = os.path.join(output_dir, self.FILENAME)
        self.path = os.path.join(output_dir, self.LIVE_FILENAME)
        self.period, self.seconds = max(int(period), 1), float(seconds)
        self.progress_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.last_row: dict | None = None
        self.logger = get_logger("engine")
        self._bar = None

    def before_train(self) -> None:
        if not os.path.isfile(self.path) and os.path.isfile(self.final_path):  # a folder without a live log
            shutil.copyfile(self.final_path, self.path)
        self._drop_rows_from(self.trainer.start_iter)
        self._row_start_iter = self.trainer.start_iter
        self._row_start_time = time.perf_counter()
        if self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter, desc="train",
                             dynamic_ncols=True)

    def _drop_rows_from(self, first_iter: int) -> None:
        """A resumed run rewrites the rows an interrupted one wrote after its last checkpoint (and a
        torn last line of a killed one)."""
        if not os.path.isfile(self.path):
            return
        kept = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    break
                if row.get("iteration", -1) >= first_iter:
                    break
                kept.append(row)
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in kept)
        if kept:
            self.last_row = kept[-1]

    def after_step(self) -> None:
        it, storage = self.trainer.iter, self.trainer.storage
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{storage.latest().get('total_loss', float('nan')):.4g}")
        elapsed = time.perf_counter() - self._row_start_time
        if (it + 1) % self.period and it + 1 < self.trainer.max_iter and elapsed < self.seconds:
            return
        n_iters = it + 1 - self._row_start_iter
        row: dict = {"iteration": it}
        for name in storage.names():
            value = storage.mean_since(name, self._row_start_iter)
            if value is not None:
                row[name] = value
        row["lr"] = storage.latest()["lr"]
        row["time"] = elapsed / max(n_iters, 1)
        row["eta_seconds"] = row["time"] * (self.trainer.max_iter - it - 1)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        self.last_row = row
        self._row_start_iter, self._row_start_time = it + 1, time.perf_counter()
        if self._bar is None:
            losses = "  ".join(f"{k}: {v:.4g}" for k, v in row.items() if k.startswith("loss") or k == "total_loss")
            self.logger.info("iter %d/%d  %s  lr: %.3g  %.4f s/iter  ETA %s", it + 1, self.trainer.max_iter, losses,
                             row["lr"], row["time"], _format_eta(row["eta_seconds"]))

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if os.path.isfile(self.path):
            tmp = f"{self.final_path}.tmp{os.getpid()}"
            shutil.copyfile(self.path, tmp)
            os.replace(tmp, self.final_path)


class MLflowWriter(HookBase):
    """Sends every new row of a ``MetricsWriter`` to the tracker (step = iteration)."""

    def __init__(self, *, tracker: Tracker, source: MetricsWriter):
        self.tracker, self.source = tracker, source
        self._logged_iter = -1

    def before_train(self) -> None:  # a resumed run: the rows before its checkpoint were sent already
        row = self.source.last_row
        self._logged_iter = row["iteration"] if row else -1

    def after_step(self) -> None:
        row = self.source.last_row
        if row is not None and row["iteration"] != self._logged_iter:
            self._logged_iter = row["iteration"]
            self.tracker.log_metrics({k: v for k, v in row.items() if k != "iteration"}, step=row["iteration"])
