"""Trainer hooks: NaN guard, LR schedule, periodic checkpoints, evaluation, metrics/progress, MLflow.

Order matters (``defaults.build_hooks`` uses this one): the NaN guard first, so that no later hook
saves or logs a step whose loss was not finite.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time
from typing import Callable

from ..tracking import Tracker, flatten_metrics
from ..utils.logger import get_logger
from .checkpointer import FINAL_NAME, Checkpointer, periodic_name
from .trainer import HookBase


class NanGuard(HookBase):
    """Stops training with ``FloatingPointError`` when a loss term is NaN/inf (checked every step).

    Args:
        checkpointer: named in the message, so users know which good checkpoint is kept.
    """

    def __init__(self, *, checkpointer: Checkpointer | None = None):
        self.checkpointer = checkpointer

    def after_step(self) -> None:
        losses = self.trainer.last_losses
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if not bad:
            return
        last = self.checkpointer.last_checkpoint() if self.checkpointer else None
        terms = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise FloatingPointError(
            f"loss is not finite at iteration {self.trainer.iter}: {terms}. Training stopped; "
            + (f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"))


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

    Args:
        output_dir: folder of the JSON-lines file (appended to, so a resumed run continues it).
        period, seconds: row frequency.
        progress_bar: None = a bar exactly when stderr is a terminal.
    """

    FILENAME = "metrics.jsonl"

    def __init__(self, *, output_dir: str, period: int, seconds: float, progress_bar: bool | None = None):
        self.path = os.path.join(output_dir, self.FILENAME)
        self.period, self.seconds = max(int(period), 1), float(seconds)
        self.progress_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self.last_row: dict | None = None
        self.logger = get_logger("engine")
        self._bar = None

    def before_train(self) -> None:
        self._drop_rows_from(self.trainer.start_iter)
        self._row_start_iter = self.trainer.start_iter
        self._row_start_time = time.perf_counter()
        if self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter, desc="train",
                             dynamic_ncols=True)

    def _drop_rows_from(self, first_iter: int) -> None:
        """A resumed run rewrites the rows an interrupted one wrote after its last checkpoint."""
        if not os.path.isfile(self.path):
            return
        with open(self.path, encoding="utf-8") as fh:
            rows = [line for line in fh if line.strip()]
        kept = [line for line in rows if json.loads(line).get("iteration", -1) < first_iter]
        if len(kept) < len(rows):
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.writelines(kept)
        if kept:
            self.last_row = json.loads(kept[-1])

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


class MLflowWriter(HookBase):
    """Sends every new row of a ``MetricsWriter`` to the tracker (step = iteration)."""

    def __init__(self, *, tracker: Tracker, source: MetricsWriter):
        self.tracker, self.source = tracker, source
        self._logged_iter = -1

    def after_step(self) -> None:
        row = self.source.last_row
        if row is not None and row["iteration"] != self._logged_iter:
            self._logged_iter = row["iteration"]
            self.tracker.log_metrics({k: v for k, v in row.items() if k != "iteration"}, step=row["iteration"])
