"""Load and save detectron2-format checkpoints (``{"model": state_dict, ...}``)."""
from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from ..errors import UserError, UserFileNotFoundError, one_line
from .convert import TORCHVISION_SCHEME, load_d2_pkl, load_torchvision

logger = logging.getLogger(__name__)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: refused, unreadable, or not what the model needs."""


class UnreadableCheckpointError(CheckpointError):
    """The file is there but cannot be read: truncated, corrupt, refused, or not a checkpoint."""


def _torch_load(path: str):
    """``torch.load(path, weights_only=True)``; never falls back to full unpickling.

    Raises:
        UnreadableCheckpointError: one line naming ``path``: what the pickle would import, or why the
            file cannot be read (truncated zip, not a torch file).
    """
    from ..utils.safe_pickle import numpy_globals

    try:
        with torch.serialization.safe_globals(numpy_globals()):  # numpy arrays, as in .pkl files
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        reason = (f"it would import {found.group(1)}" if found else
                  "it holds Python objects beyond tensors and plain data: " + one_line(str(err), 200))
        raise UnreadableCheckpointError(f"refusing to load {path}: {reason} (checkpoints are read with "
                                        "torch.load(weights_only=True) only)") from None
    except (PermissionError, IsADirectoryError) as err:
        raise UnreadableCheckpointError(f"cannot read checkpoint {path}: {err.strerror}") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise UnreadableCheckpointError(f"cannot read checkpoint {path}: truncated, corrupt or not a torch file "
                                        f"({one_line(f'{type(err).__name__}: {err}', 160)})") from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint as ``{"model": {name: tensor}, ...rest}`` whatever its format.

    Accepts ``.pth``/``.pt`` (ours / detectron2, or a bare state dict), ``.pkl`` (detectron2 model zoo)
    and ``torchvision://resnetNN``.

    Raises:
        FileNotFoundError (a ``UserError``): naming the path when the file does not exist.
        UnreadableCheckpointError: the file is truncated or corrupt, or its pickle asks for anything
            but tensors and plain data (nothing from it is run).
    """
    path = str(path)
    if path.startswith(TORCHVISION_SCHEME):
        return {"model": load_torchvision(path[len(TORCHVISION_SCHEME):]), "__source__": "torchvision"}
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".pkl"):
        return load_d2_pkl(path)
    data = _torch_load(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data["model"] = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in data["model"].items()}
        return data
    if isinstance(data, dict) and data and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in data.values()):
        return {"model": {k: torch.as_tensor(v) for k, v in data.items()}}
    raise UnreadableCheckpointError(f"{path}: neither a {{'model': state_dict}} checkpoint nor a bare state dict")


def abbreviate(items: list[str], limit: int = 6) -> str:
    """``"a; b; c"``, or the first ``limit`` items and ``"... (N more)"``: a message that stays one line."""
    shown = "; ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}; ... ({len(items) - limit} more)"


def group_keys(keys: list[str]) -> list[str]:
    """Compact display of parameter names: block indices and leaf names folded.

    ``a.0.w, a.0.b, a.1.w, a.1.b`` -> ``a.{0,1}.{b,w}``.
    """
    by_leaf: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        head, _, leaf = key.rpartition(".")
        by_leaf[head].add(leaf)
    by_index: dict[tuple[str, str], set[str]] = defaultdict(set)
    for head, leaves in by_leaf.items():
        leaf_txt = next(iter(leaves)) if len(leaves) == 1 else "{" + ",".join(sorted(leaves)) + "}"
        match = re.match(r"^(.*?)\.(\d+)((?:\..*)?)$", head)
        if match:
            by_index[(f"{match.group(1)}.{{}}{match.group(3)}", leaf_txt)].add(match.group(2))
        else:
            by_index[(head, leaf_txt)].add("")
    lines = []
    for (pattern, leaf), idx in sorted(by_index.items()):
        if "{}" in pattern:
            ids = sorted(idx, key=int)
            pattern = pattern.replace("{}", ids[0] if len(ids) == 1 else "{" + ",".join(ids) + "}")
        lines.append(f"{pattern}.{leaf}" if pattern else leaf)
    return sorted(lines)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, strict_shapes: bool = True,
                    required: Iterable[str] | None = None) -> tuple[list[str], list[str], dict]:
    """Load a checkpoint's weights into ``model`` by name.

    Args:
        model: the module to fill.
        path: ``.pth``/``.pt`` ({"model": ...} or bare), detectron2 ``.pkl``, or ``torchvision://resnetNN``.
        strict_shapes: raise on a shape mismatch of a required tensor (default); False skips those
            tensors with a warning and reports them as missing. Tensors outside ``required`` are
            always skipped with a warning when their shape differs.
        required: names the model cannot do without (default: every name of its state dict). The
            model is left untouched and ``CheckpointError`` names them when the file lacks any.
    Returns:
        (missing keys, unexpected keys, the rest of the file: everything but "model", e.g. "iteration",
        optimizer and scheduler states).
    Raises:
        FileNotFoundError for a missing file; ``CheckpointError`` (a ValueError) for an unreadable
        file, a required tensor it lacks, or, with ``strict_shapes``, listing the shape mismatches
        (name, checkpoint shape, model shape).
    """
    data = read_checkpoint(path)
    state = data.pop("model")
    own = model.state_dict()
    needed = set(own) if required is None else set(required)
    absent = sorted(needed - set(state))
    if absent and required is not None:
        raise CheckpointError(f"{path} lacks {len(absent)} of the {len(needed)} tensors this model needs: "
                              f"{abbreviate(group_keys(absent))}")
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(getattr(v, "shape", ())) != tuple(own[k].shape)]
    fatal = [f"{k}: checkpoint {c} vs model {m}" for k, c, m in mismatched if k in needed]
    if fatal and strict_shapes:
        raise CheckpointError(f"{path}: {len(fatal)} shape mismatch(es): {abbreviate(fatal)}")
    if mismatched:
        lines = [f"{k}: checkpoint {c} vs model {m}" for k, c, m in mismatched]
        logger.warning("%s: skipping %d tensor(s) with mismatched shapes: %s", path, len(mismatched),
                       abbreviate(lines))
        for k, _, _ in mismatched:
            state.pop(k)
    result = model.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing:
        logger.warning("%s: %d key(s) missing from the checkpoint (left as initialised):\n  %s", path, len(missing),
                       "\n  ".join(group_keys(missing)))
    if unexpected:
        logger.warning("%s: %d unexpected key(s) in the checkpoint (ignored):\n  %s", path, len(unexpected),
                       "\n  ".join(group_keys(unexpected)))
    logger.info("loaded %d tensor(s) from %s", len(state) - len(unexpected), path)
    return missing, unexpected, data


def save_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, **extra) -> Path:
    """Write ``{"model": model.state_dict(), **extra}`` atomically (temporary file + ``os.replace``).

    Returns:
        the written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(extra)
    if model is not None:
        data["model"] = model.state_dict()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
