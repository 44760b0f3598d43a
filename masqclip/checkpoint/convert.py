"""Key conversion of foreign checkpoints into our (detectron2) parameter names.

- torchvision ResNets: ``conv1``/``bn1`` -> ``stem.conv1``/``stem.conv1.norm``,
  ``layerK.i.convJ``/``bnJ`` -> ``res{K+1}.i.convJ``/``.norm``, ``downsample.{0,1}`` -> ``shortcut``/``.norm``.
- detectron2 model-zoo ``.pkl`` files: numpy arrays -> tensors; backbone-only files get ``backbone.``.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, UserFileNotFoundError
from ..utils import safe_pickle

logger = logging.getLogger(__name__)

TORCHVISION_SCHEME = "torchvision://"
BACKBONE_PREFIX = "backbone."
# Names a backbone-only checkpoint starts with (detectron2 ResNet modules).
_BACKBONE_ROOTS = ("stem.", "res2.", "res3.", "res4.", "res5.")
# torchvision modules with no counterpart in the detectron2 backbone.
_TORCHVISION_DROPPED = ("fc.",)


def torchvision_resnet_to_d2(state_dict: dict[str, torch.Tensor], prefix: str = BACKBONE_PREFIX
                             ) -> dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to detectron2 names (``num_batches_tracked`` and ``fc`` dropped).

    Args:
        state_dict: torchvision ``resnetNN().state_dict()``-style mapping.
        prefix: prepended to every converted name (``"backbone."`` for a full model).
    Returns:
        the renamed mapping.
    """
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") or key.startswith(_TORCHVISION_DROPPED):
            continue
        new = key
        new = re.sub(r"^conv1\.", "stem.conv1.", new)
        new = re.sub(r"^bn1\.", "stem.conv1.norm.", new)
        new = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m.group(1)) + 1}.", new)
        new = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", new)
        new = new.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        out[prefix + new] = value
    return out


def torchvision_weights_file(name: str) -> Path:
    """Local file of torchvision's ImageNet weights for ``name`` (e.g. ``resnet50``); never downloads.

    Raises:
        FileNotFoundError naming the expected path and the download URL when the file is absent.
    """
    try:
        import torchvision.models as tvm
    except ImportError as err:  # pragma: no cover - torchvision is a dependency
        raise UserFileNotFoundError(f"{TORCHVISION_SCHEME}{name} needs torchvision installed") from err
    try:
        builder = getattr(tvm, name)
        weights = tvm.get_model_weights(builder).IMAGENET1K_V1
    except (AttributeError, ValueError) as err:
        raise UserError(f"{TORCHVISION_SCHEME}{name}: not a torchvision model with ImageNet weights") from err
    filename = os.path.basename(weights.url)
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    path = hub_dir / filename
    if not path.is_file():
        raise UserFileNotFoundError(
            f"ImageNet weights for {TORCHVISION_SCHEME}{name} not found: put {filename} (from {weights.url}) "
            f"at {path} (torch hub cache; set TORCH_HOME to move it), or set MODEL.WEIGHTS to a local file")
    return path


def load_torchvision(name: str) -> dict[str, torch.Tensor]:
    """``torchvision://resnetNN`` -> the backbone state dict in our names."""
    from .io import _torch_load  # io imports this module

    state = _torch_load(str(torchvision_weights_file(name)))
    return torchvision_resnet_to_d2(state)


def load_d2_pkl(path: str | os.PathLike) -> dict:
    """Read a detectron2 model-zoo ``.pkl`` into ``{"model": {name: tensor}, ...rest}``.

    Backbone-only files (names starting ``stem.``/``resN.``) get the ``backbone.`` prefix. A frozen
    BN with weight/bias but no running statistics (Caffe2 exports fold them into the affine) gets
    ``running_mean = 0`` and ``running_var = 1``, so it stays the same affine map.

    The file is read by ``masqclip.utils.safe_pickle`` (plain data and numpy arrays only): a pickle
    that asks for anything else is refused, naming the file, and nothing from it runs.
    """
    from .io import UnreadableCheckpointError  # io imports this module

    try:
        data = safe_pickle.load(path, encoding="latin1")
    except UserError as err:
        raise UnreadableCheckpointError(str(err)) from None
    if not isinstance(data, dict):
        raise UnreadableCheckpointError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    model = data.pop("model", None)
    if model is None:
        model = data.pop("blobs", None)
    if model is None:
        model, data = data, {}
    if not isinstance(model, dict):
        raise UnreadableCheckpointError(f"{path}: its 'model' entry is a {type(model).__name__}, not a dict of arrays")
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in model.items() if isinstance(v, (np.ndarray, torch.Tensor))}
    if tensors and all(k.startswith(_BACKBONE_ROOTS) for k in tensors):
        tensors = {BACKBONE_PREFIX + k: v for k, v in tensors.items()}
    for key in [k for k in tensors if k.endswith(".norm.weight")]:
        base = key[: -len("weight")]
        if base + "bias" in tensors and base + "running_mean" not in tensors:
            tensors[base + "running_mean"] = torch.zeros_like(tensors[key])
            tensors[base + "running_var"] = torch.ones_like(tensors[key])
    data["model"] = tensors
    return data
