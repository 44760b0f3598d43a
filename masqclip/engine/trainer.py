"""The training loop: ``run_step`` loads, forwards, backwards and steps; everything else is a hook.

Models follow docs/architecture.md: ``model(list_of_dicts)`` returns a dict of scalars in training;
keys starting with ``loss_`` are already weighted losses (the total loss is their sum), any other key
is a detached metric that is only logged.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict, deque
from typing import Callable, Iterable

import torch
from torch import nn

from .launch import reduce_mean

HISTORY_LENGTH = 10000  # scalar values kept per name (writers average over windows of it)
LOSS_PREFIX = "loss_"


class MetricStorage:
    """Scalars per iteration, for hooks to read and average."""

    def __init__(self) -> None:
        self.iter = 0
        self._latest: dict[str, float] = {}
        self._history: dict[str, deque] = defaultdict(lambda: deque(maxlen=HISTORY_LENGTH))

    def put_scalars(self, **values: float) -> None:
        """Record ``name=value`` pairs at the current iteration."""
        for name, value in values.items():
            value = float(value)
            self._latest[name] = value
            self._history[name].append((self.iter, value))

    def latest(self) -> dict[str, float]:
        return dict(self._latest)

    def mean_since(self, name: str, first_iter: int) -> float | None:
        """Mean of ``name`` over iterations >= ``first_iter``; None when it has no such value."""
        values = [v for i, v in self._history[name] if i >= first_iter]
        return sum(values) / len(values) if values else None

    def names(self) -> list[str]:
        return list(self._latest)


class HookBase:
    """Called by the trainer around training and every step; ``self.trainer`` is set on registration."""

    trainer: "TrainerBase"

    def before_train(self) -> None: ...

    def after_train(self) -> None: ...

    def before_step(self) -> None: ...

    def after_step(self) -> None: ...


class TrainerBase:
    """Iterates ``run_step`` from ``start_iter`` to ``max_iter - 1`` and calls the hooks around it.

    ``completed`` is True in ``after_train`` only when every iteration ran (hooks use it to tell a
    finished run from one stopped by an exception; ``after_train`` runs in both cases).
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = self.start_iter = self.max_iter = 0
        self.completed = False
        self.storage = MetricStorage()

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self._hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.completed = False
        try:
            for hook in self._hooks:
                hook.before_train()
            for self.iter in range(start_iter, max_iter):
                self.storage.iter = self.iter
                for hook in self._hooks:
                    hook.before_step()
                self.run_step()
                for hook in self._hooks:
                    hook.after_step()
            self.iter = max(max_iter, start_iter)
            self.completed = True
        finally:
            for hook in self._hooks:
                hook.after_train()

    def run_step(self) -> None:
        raise NotImplementedError


class SimpleTrainer(TrainerBase):
    """Full-precision training step, optionally with gradient clipping.

    Args:
        model: returns a loss dict for a list of per-image dicts (may be DDP-wrapped).
        data_loader: an iterable of batches (lists of dicts), usually infinite.
        optimizer: over the model's trainable parameters.
        grad_clipper: called with the optimizer's parameters after backward (see ``optim.build_grad_clipper``).
    """

    def __init__(self, *, model: nn.Module, data_loader: Iterable, optimizer: torch.optim.Optimizer,
                 grad_clipper: Callable[[Iterable[nn.Parameter]], None] | None = None):
        super().__init__()
        model.train()
        self.model, self.data_loader, self.optimizer = model, data_loader, optimizer
        self.grad_clipper = grad_clipper
        self._data_iter = None
        self.last_losses: dict[str, float] = {}

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def run_step(self) -> None:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        start = time.perf_counter()
        data = next(self._data_iter)
        data_time = time.perf_counter() - start
        try:
            with self.autocast():
                outputs = self.model(data)
        except FloatingPointError as err:  # e.g. the matcher's cost: the weights have diverged
            previous = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self.last_losses.items())) or "none yet"
            raise FloatingPointError(f"non-finite values in the forward pass at iteration {self.iter}: {err} "
                                     f"(loss terms of the previous step: {previous}). Training stopped") from err
        losses = [v for k, v in outputs.items() if k.startswith(LOSS_PREFIX)]
        if not losses:
            raise ValueError(f"the model returned no '{LOSS_PREFIX}*' terms in training (keys: {sorted(outputs)})")
        self.optimizer.zero_grad(set_to_none=True)
        self.backward_and_step(sum(losses))
        self.record(outputs, data_time)

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def backward_and_step(self, losses: torch.Tensor) -> None:
        losses.backward()
        if self.grad_clipper is not None:
            self.grad_clipper(self.params)
        self.optimizer.step()

    def record(self, outputs: dict[str, torch.Tensor], data_time: float) -> None:
        """Store the rank-averaged loss terms and metrics, the total loss, the lr and the data time.

        ``self.last_losses`` gets the loss terms and ``total_loss`` (what the NaN guard checks).
        """
        values = reduce_mean({k: float(v.detach()) for k, v in outputs.items()})
        losses = {k: v for k, v in values.items() if k.startswith(LOSS_PREFIX)}
        losses["total_loss"] = sum(losses.values())
        self.last_losses = losses
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        self.storage.put_scalars(**values, total_loss=losses["total_loss"], lr=lr, data_time=data_time)

    def state_dict(self) -> dict:
        return {"iteration": self.iter}


class AMPTrainer(SimpleTrainer):
    """Mixed precision on CUDA: autocast to ``dtype``; fp16 uses a GradScaler (bf16 needs none).

    Args (besides SimpleTrainer's):
        dtype: torch.float16 or torch.bfloat16.
        grad_scaler: a ``torch.amp.GradScaler`` for fp16, None for bf16.
        device_type: autocast device type ("cuda").
    """

    def __init__(self, *, dtype: torch.dtype, grad_scaler: torch.amp.GradScaler | None = None,
                 device_type: str = "cuda", **kwargs):
        super().__init__(**kwargs)
        self.dtype, self.grad_scaler, self.device_type = dtype, grad_scaler, device_type

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_and_step(self, losses: torch.Tensor) -> None:
        if self.grad_scaler is None:
            return super().backward_and_step(losses)
        self.grad_scaler.scale(losses).backward()
        if self.grad_clipper is not None:
            self.grad_scaler.unscale_(self.optimizer)
            self.grad_clipper(self.params)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
