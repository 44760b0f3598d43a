"""Logging set-up: one ``masqclip`` logger, to stderr (main process) and to a file per rank."""
from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "masqclip"
_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATE_FORMAT = "%m/%d %H:%M:%S"


def setup_logger(output_dir: str | None = None, *, rank: int = 0, name: str = LOGGER_NAME,
                 level: int = logging.INFO) -> logging.Logger:
    """Configure ``name`` once per process and return it.

    Args:
        output_dir: folder for ``log.txt`` (rank 0) or ``log.txt.rank{r}`` (other ranks); None = no file.
        rank: process rank; only rank 0 writes to stderr, so SLURM logs are not repeated per task.
        name: logger name (children such as ``masqclip.engine`` propagate to it).
        level: threshold of the handlers.

    Returns:
        The configured logger. Calling again replaces the handlers this function added earlier.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for handler in [h for h in logger.handlers if getattr(h, "_masqclip", False)]:
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers.append(logging.StreamHandler(sys.stderr))
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        handlers.append(logging.FileHandler(os.path.join(output_dir, filename), encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.setLevel(level)
        handler._masqclip = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


def get_logger(suffix: str = "") -> logging.Logger:
    """The package logger, or its child ``masqclip.<suffix>``."""
    return logging.getLogger(f"{LOGGER_NAME}.{suffix}" if suffix else LOGGER_NAME)
