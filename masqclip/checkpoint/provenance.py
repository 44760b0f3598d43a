"""What a trained checkpoint needs for inference, recorded inside it and checked before use.

Every checkpoint that training writes carries, beside ``"model"``:

- ``"cfg"``: the full config it was trained with, as YAML text (a plain string: safe to read with
  ``torch.load(weights_only=True)``), so ``masqclip predict --weights model_final.pth`` needs no
  ``--config-file``;
- ``"clip_weights"`` (MasQ-Tuning only): the CLIP weights its text tower comes from, which are
  *not* part of the checkpoint (the text tower is frozen and shared): ``{"model_name",
  "pretrained", "sha256", "size"}``; ``pretrained`` is the file path or open_clip tag
  (MODEL.MASQ_CLIP.PRETRAINED), ``sha256``/``size`` identify a local file's content.

:func:`check_clip_weights` refuses (one line naming what is missing) an inference config whose
CLIP weights are not the ones the model was tuned with: a missing file, another file content, or
no weights at all (a randomly initialised text encoder classifies nothing).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

CFG_KEY = "cfg"
CLIP_KEY = "clip_weights"
CONFIG_BESIDE = "config.yaml"  # written by training into OUTPUT_DIR, beside the checkpoints
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file (memoised by path, size and modification time)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def clip_record(cfg) -> dict | None:
    """The ``"clip_weights"`` entry for a MasQ-Tuning config (None for other models)."""
    if cfg.MODEL.META_ARCHITECTURE != "MasQTuning":
        return None
    from ..modeling.clip.factory import is_weights_path

    mc = cfg.MODEL.MASQ_CLIP
    record = {"model_name": str(mc.MODEL_NAME), "pretrained": str(mc.PRETRAINED), "sha256": "", "size": -1}
    if mc.PRETRAINED and is_weights_path(mc.PRETRAINED) and os.path.isfile(mc.PRETRAINED):
        record.update(sha256=file_sha256(mc.PRETRAINED), size=os.path.getsize(mc.PRETRAINED))
    return record


def checkpoint_metadata(cfg) -> dict:
    """Entries training adds to each checkpoint: the config as YAML text and, for MasQ-Tuning, the
    CLIP weights' identity."""
    meta = {CFG_KEY: cfg.dump()}
    record = clip_record(cfg)
    if record is not None:
        meta[CLIP_KEY] = record
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """``{"cfg": str | None, "clip_weights": dict | None}`` of a checkpoint (weights_only loading)."""
    from .io import read_checkpoint

    data = read_checkpoint(path)
    if not isinstance(data, dict):
        return {CFG_KEY: None, CLIP_KEY: None}
    cfg, clip = data.get(CFG_KEY), data.get(CLIP_KEY)
    return {CFG_KEY: cfg if isinstance(cfg, str) else None, CLIP_KEY: clip if isinstance(clip, dict) else None}


def training_config(weights: str | os.PathLike, meta: dict) -> tuple[str, str] | None:
    """(YAML text, where it came from) of the config a checkpoint was trained with: inside the
    checkpoint, else ``config.yaml`` beside it; None when neither exists."""
    if meta.get(CFG_KEY):
        return meta[CFG_KEY], f"{weights} (the config saved in the checkpoint)"
    beside = Path(weights).resolve().parent / CONFIG_BESIDE
    if beside.is_file():
        return beside.read_text(encoding="utf-8"), str(beside)
    return None


def check_clip_weights(cfg, meta: dict, weights: str) -> None:
    """Raise ``ConfigError`` (one line) when a MasQ-Tuning model's text tower cannot be rebuilt as it
    was tuned: CLIP weights missing, of other content, or none (random initialisation)."""
    from ..config import ConfigError
    from ..modeling.clip.factory import is_weights_path

    if cfg.MODEL.META_ARCHITECTURE != "MasQTuning":
        return
    mc = cfg.MODEL.MASQ_CLIP
    record = meta.get(CLIP_KEY)
    if not mc.PRETRAINED:
        wanted = f" (it was tuned with {record['pretrained']!r})" if record and record.get("pretrained") else ""
        raise ConfigError(f"{weights}: the checkpoint holds no CLIP text tower and MODEL.MASQ_CLIP.PRETRAINED "
                          f"is empty, so the text encoder would be randomly initialised{wanted}; give the CLIP "
                          "weights the model was tuned with (MODEL.MASQ_CLIP.PRETRAINED /path/to/weights)")
    if is_weights_path(mc.PRETRAINED) and not os.path.isfile(mc.PRETRAINED):
        raise ConfigError(f"{weights}: the CLIP weights for its text tower are missing: "
                          f"MODEL.MASQ_CLIP.PRETRAINED={mc.PRETRAINED!r}: no such file")
    if not record:
        return  # an older checkpoint: nothing recorded to compare with
    if not record.get("pretrained"):
        raise ConfigError(f"{weights}: the model was tuned with a randomly initialised CLIP text encoder, which "
                          "the checkpoint does not hold: its predictions cannot be reproduced")
    if record.get("sha256") and is_weights_path(mc.PRETRAINED):
        digest = file_sha256(mc.PRETRAINED)
        if digest != record["sha256"]:
            raise ConfigError(f"{weights}: MODEL.MASQ_CLIP.PRETRAINED={mc.PRETRAINED!r} is not the CLIP the model "
                              f"was tuned with (sha256 {digest[:12]}..., expected {record['sha256'][:12]}... of "
                              f"{record['pretrained']!r})")
    elif not record.get("sha256") and mc.PRETRAINED != record["pretrained"]:
        raise ConfigError(f"{weights}: the model was tuned with CLIP weights {record['pretrained']!r}, the config "
                          f"gives {mc.PRETRAINED!r}")
