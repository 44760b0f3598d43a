"""Load and save detectron2-format checkpoints (``{"model": state_dict, ...}``)."""
from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from .convert import TORCHVISION_SCHEME, load_d2_pkl, load_torchvision

logger = logging.getLogger(__name__)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint as ``{"model": {name: tensor}, ...rest}`` whatever its format.

    Accepts ``.pth``/``.pt`` (ours / detectron2, or a bare state dict), ``.pkl`` (detectron2 model zoo)
    and ``torchvision://resnetNN``.

    Raises:
        FileNotFoundError: naming the path when the file does not exist.
    """
    path = str(path)
    if path.startswith(TORCHVISION_SCHEME):
        return {"model": load_torchvision(path[len(TORCHVISION_SCHEME):]), "__source__": "torchvision"}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".pkl"):
        return load_d2_pkl(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        logger.warning("%s holds Python objects beyond tensors; loading it with full unpickling "
                       "(only do this for files you trust)", path)
        data = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {"model": data}
    raise ValueError(f"{path}: neither a {{'model': state_dict}} checkpoint nor a bare state dict")


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


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, strict_shapes: bool = True
                    ) -> tuple[list[str], list[str], dict]:
    """Load a checkpoint's weights into ``model`` by name.

    Args:
        model: the module to fill.
        path: ``.pth``/``.pt`` ({"model": ...} or bare), detectron2 ``.pkl``, or ``torchvision://resnetNN``.
        strict_shapes: raise on any shape mismatch (default); False skips those tensors with a warning
            and reports them as missing.
    Returns:
        (missing keys, unexpected keys, the rest of the file: everything but "model", e.g. "iteration",
        optimizer and scheduler states).
    Raises:
        FileNotFoundError for a missing file; ValueError listing every shape mismatch
        (name, checkpoint shape, model shape).
    """
    data = read_checkpoint(path)
    state = data.pop("model")
    own = model.state_dict()
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        lines = [f"  {k}: checkpoint {c} vs model {m}" for k, c, m in mismatched]
        if strict_shapes:
            raise ValueError(f"{path}: {len(mismatched)} shape mismatch(es):\n" + "\n".join(lines))
        logger.warning("%s: skipping %d tensor(s) with mismatched shapes:\n%s", path, len(mismatched),
                       "\n".join(lines))
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
