"""Devices, seeds and threads: nothing here assumes CUDA."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use MODEL.DEVICE auto or cpu)")
    return device


ITERATION_STREAM = 2  # after the data order (0) and augmentation (1) streams of data/build.py


def seed_all(seed: int) -> int:
    """Seed Python, NumPy and torch; a negative seed draws a fresh one. Returns the seed used."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (e.g. seed, stream, iteration, rank)."""
    words = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(words[0]) << 31 | int(words[1]) >> 1) & 0x7FFFFFFFFFFFFFFF


def seed_iteration(seed: int, iteration: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (every device) from ``(seed, iteration, rank)`` alone.

    Called before every training step, so whatever a step draws from the global generators
    (point sampling, dropout) depends on nothing that ran before it: a resumed run draws exactly
    what an uninterrupted one draws, however many other draws (data loader start-up, evaluation)
    happened in between.
    """
    s = derived_seed(seed, ITERATION_STREAM, iteration, rank)
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)
