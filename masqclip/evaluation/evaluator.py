"""The evaluator protocol, a composite of evaluators, and the inference loop that feeds them."""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Accumulates one dataset's predictions and scores them.

    ``reset()`` before a pass, ``process(inputs, outputs)`` per batch (the model's input list and its
    output list), ``evaluate()`` at the end -> ``{task: {metric: float}}`` (percentages 0-100).
    """

    def reset(self) -> None:
        pass

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        pass

    def evaluate(self) -> dict[str, dict[str, float]]:
        return {}


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators on the same predictions; their result dicts are merged."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for e in self.evaluators:
            e.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for e in self.evaluators:
            e.process(inputs, outputs)

    def evaluate(self) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        for e in self.evaluators:
            for task, metrics in (e.evaluate() or {}).items():
                if task in results:
                    raise KeyError(f"two evaluators report the task {task!r}")
                results[task] = metrics
        return results


def gather_on_main(items: list) -> list | None:
    """Concatenate ``items`` of every process on rank 0 (``None`` on other ranks); no-op when single."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    world = torch.distributed.get_world_size()
    if world == 1:
        return items
    gathered: list[Any] = [None] * world if torch.distributed.get_rank() == 0 else None
    torch.distributed.gather_object(items, gathered, dst=0)
    if gathered is None:
        return None
    return [x for part in gathered for x in part]


def write_results(output_dir: str | os.PathLike | None, file_name: str, results: dict) -> None:
    """Write ``results`` as JSON to ``output_dir/file_name`` (nothing when ``output_dir`` is empty)."""
    if not output_dir:
        return
    path = Path(output_dir) / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


@contextmanager
def _eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def inference_on_dataset(model: torch.nn.Module, data_loader: Iterable[list[dict]],
                         evaluator: DatasetEvaluator | None, *, log_period: int = 50,
                         autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> dict:
    """Run ``model`` over ``data_loader`` in eval mode without gradients and score it.

    Args:
        model: called on each batch (a list of per-image input dicts) -> a list of output dicts.
        data_loader: finite iterable of batches.
        evaluator: receives every (inputs, outputs) pair; ``None`` only runs the model.
        log_period: log progress (images/s, ETA) every this many batches.
        autocast: ``() -> context`` entered around each model call only (mixed-precision
            inference, ``TEST.AMP``); evaluators always see the model's fp32 outputs.

    Returns:
        ``evaluator.evaluate()`` (``{}`` on non-main ranks or without an evaluator).
    """
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    if evaluator is not None:
        evaluator.reset()
    start, images = time.perf_counter(), 0
    with _eval_mode(model), torch.no_grad():
        for idx, inputs in enumerate(data_loader):
            with autocast() if autocast else contextlib.nullcontext():
                outputs = model(inputs)
            if evaluator is not None:
                evaluator.process(inputs, outputs)
            images += len(inputs)
            if log_period and (idx + 1) % log_period == 0:
                elapsed = time.perf_counter() - start
                eta = "?" if total is None else str(datetime.timedelta(
                    seconds=int(elapsed / (idx + 1) * (total - idx - 1))))
                logger.info("inference %d/%s batches, %.2f images/s, ETA %s",
                            idx + 1, total if total is not None else "?", images / max(elapsed, 1e-9), eta)
    elapsed = time.perf_counter() - start
    logger.info("inference done: %d images in %.1f s (%.3f s/image)", images, elapsed,
                elapsed / max(images, 1))
    results = evaluator.evaluate() if evaluator is not None else {}
    return results or {}
