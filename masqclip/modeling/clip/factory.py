"""CLIP models through open_clip: by architecture name + pretrained tag, a local file, or random.

- Names: open_clip's (``ViT-L-14-336``); OpenAI-style aliases (``ViT-L/14@336px``) and the official
  configs' one-element lists are accepted. Our own architectures (``masqclip-tiny``) live as JSON
  files in ``model_configs/`` and are registered with ``open_clip.add_model_config`` on first use.
- Weights: ``""`` = random initialisation; a path = a local checkpoint (open_clip's, or one written
  by ``masqclip pretrain-clip``); anything else = an open_clip pretrained tag (paper: ``openai``).
  A tag is first looked up in the local caches (Hugging Face hub cache, open_clip's URL cache); if
  absent, a short network probe decides whether downloading can work. Offline, one clear
  ``ClipWeightsUnavailable`` error names the remedies instead of open_clip's ~46 s of retries.
- Activation: OpenAI's weights need QuickGELU (open_clip's ``-quickgelu`` architectures); under plain
  GELU they give different embeddings, silently. A tag's ``quick_gelu`` flag is honoured. A local
  file is loaded into the named architecture as it is, so a file recognised as OpenAI's weights
  (open_clip's download name or Hugging Face cache path of a QuickGELU tag, the SHA-256 in an OpenAI
  download URL, or a TorchScript archive, the format OpenAI released CLIP in) with a plain-GELU
  architecture is refused (``ClipActivationMismatch``, naming the ``-quickgelu`` name to use). A
  renamed plain state-dict copy cannot be recognised: name the ``-quickgelu`` architecture for it.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import zipfile
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import torch

from ...config import ConfigError
from ...errors import UserError, UserFileNotFoundError

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
# Seconds a TCP connection to the weights host may take before we call the machine offline.
PROBE_TIMEOUT_S = 3.0
HF_HOST = "huggingface.co"
HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_OPENAI_ALIAS = re.compile(r"^(?P<arch>[A-Za-z]+-?[A-Za-z]*)/(?P<patch>\d+)(?:@(?P<res>\d+)px)?$")
_registered = False


class ClipWeightsUnavailable(UserError, RuntimeError):
    """Pretrained CLIP weights are neither cached locally nor downloadable (offline)."""


class ClipActivationMismatch(ConfigError):
    """OpenAI CLIP weights (QuickGELU) named with a plain-GELU architecture."""


def register_model_configs() -> None:
    """Make our JSON architectures (``masqclip-tiny``, ...) known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        import open_clip

        if not set(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
            open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def canonical_model_name(name: str | Sequence[str]) -> str:
    """open_clip architecture name for a config value.

    Args:
        name: ``"ViT-L-14-336"``, ``"ViT-L/14@336px"``, ``"ViT-B/16"`` or a one-element list of those.

    Returns:
        The open_clip name, e.g. ``"ViT-L-14-336"``.
    """
    if not isinstance(name, str):
        names = list(name)
        if len(names) != 1:
            raise ValueError(f"MODEL.MASQ_CLIP.MODEL_NAME must name one CLIP model, got {names}")
        name = names[0]
    match = _OPENAI_ALIAS.match(name.strip())
    if match:
        out = f"{match['arch']}-{match['patch']}"
        return f"{out}-{match['res']}" if match["res"] else out
    return name.strip().replace("/", "-")


def is_weights_path(pretrained: str) -> bool:
    """True when ``pretrained`` names a file rather than an open_clip tag."""
    return bool(pretrained) and (os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES)
                                 or os.path.exists(pretrained))


def weights_identity(pretrained: str) -> str:
    """A string that changes whenever the weights ``pretrained`` refers to change (for caches)."""
    if is_weights_path(pretrained):
        path = Path(pretrained).resolve()
        stat = path.stat()
        return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"tag:{pretrained}"


def _offline_forced() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _reachable(host: str, timeout: float) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights(pcfg: dict, cache_dir: str | None) -> str | None:
    """Path of already-downloaded weights for an open_clip pretrained config, or None."""
    if pcfg.get("file"):
        return pcfg["file"]
    hub = pcfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            hf_hub_download = None
        if hf_hub_download is not None:
            repo, filename = os.path.split(hub)  # "org/name/" -> ("org/name", "")
            filename = filename or HF_DEFAULT_FILE
            stem, _ = os.path.splitext(filename)
            for candidate in (f"{stem}.safetensors", filename):
                try:
                    return hf_hub_download(repo_id=repo, filename=candidate, cache_dir=cache_dir,
                                           local_files_only=True)
                except Exception:  # noqa: BLE001 - any failure means "not in the cache"
                    continue
    url = pcfg.get("url", "")
    if url:
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def _offline_message(name: str, tag: str, cache_dir: str | None) -> str:
    from huggingface_hub import constants

    return (f"CLIP weights {name!r} / pretrained={tag!r} are not in the local caches and the network is "
            f"unreachable (or HF_HUB_OFFLINE is set). Provide them either by copying open_clip's download "
            f"into its cache (Hugging Face hub cache {constants.HF_HUB_CACHE}"
            f"{' or ' + cache_dir if cache_dir else ', or ~/.cache/clip for URL downloads'}; e.g. run "
            f"`python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\"` on a machine "
            f"with internet), or by pointing the config at a local file: MODEL.MASQ_CLIP.PRETRAINED /path/to/weights.pt")


_SHA256_IN_URL = re.compile(r"/([0-9a-f]{64})/")
QUICKGELU_SUFFIX = "-quickgelu"


def _quick_gelu_tags(name: str) -> list[tuple[str, dict]]:
    """(tag, pretrained cfg) of every QuickGELU tag of ``name`` and of its ``-quickgelu`` twin."""
    import open_clip

    base = name[:-len(QUICKGELU_SUFFIX)] if name.endswith(QUICKGELU_SUFFIX) else name
    out = []
    for arch in (base, base + QUICKGELU_SUFFIX):
        for tag in open_clip.list_pretrained_tags_by_model(arch):
            pcfg = open_clip.get_pretrained_cfg(arch, tag)
            if pcfg.get("quick_gelu", False):
                out.append((f"{arch}/{tag}", pcfg))
    return out


def _is_torchscript_archive(path: str) -> bool:
    """True for a ``torch.jit.save`` file (a zip holding ``<root>/constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.split("/", 1)[-1] == "constants.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def openai_weights_evidence(name: str, path: str) -> str | None:
    """Why the file at ``path`` holds QuickGELU (OpenAI-style) weights for architecture ``name``, or
    None when nothing says so. The file is hashed only when a QuickGELU tag's URL carries a SHA-256."""
    tags = _quick_gelu_tags(name)
    resolved = Path(path).resolve()
    for label, pcfg in tags:
        if os.path.basename(pcfg.get("url", "")) == resolved.name:
            return f"its name is open_clip's download name of {label}"
        repo = pcfg.get("hf_hub", "").strip("/")
        if repo and "models--" + repo.replace("/", "--") in resolved.parts:
            return f"it lies in the Hugging Face cache of {label} ({repo})"
    if _is_torchscript_archive(path):
        return "it is a TorchScript archive, the format OpenAI released CLIP in"
    digests = {m[1]: label for label, pcfg in tags if (m := _SHA256_IN_URL.search(pcfg.get("url", "")))}
    if digests:
        label = digests.get(_sha256(path))
        if label:
            return f"its SHA-256 is that of open_clip's {label} download"
    return None


def check_activation_for_weights(name: str, path: str) -> None:
    """Refuse OpenAI CLIP weights in a plain-GELU architecture (see the module docstring).

    Raises:
        ClipActivationMismatch: ``name`` builds GELU and ``path`` is recognised as QuickGELU weights.
    """
    import open_clip

    if open_clip.get_model_config(name).get("quick_gelu", False):
        return
    evidence = openai_weights_evidence(name, path)
    if evidence:
        twin = name + QUICKGELU_SUFFIX
        hint = (f"MODEL.MASQ_CLIP.MODEL_NAME {twin!r}" if open_clip.get_model_config(twin) is not None
                else "an architecture with quick_gelu")
        raise ClipActivationMismatch(
            f"MODEL.MASQ_CLIP.PRETRAINED={path!r} holds OpenAI-style CLIP weights ({evidence}), which need "
            f"QuickGELU, but architecture {name!r} builds plain GELU and would give different embeddings "
            f"without any error: use {hint}")


def _create_from_file(name: str, path: str, kwargs: dict) -> torch.nn.Module:
    """open_clip's model with the weights of a local file (read with ``weights_only=True``: a file whose
    pickle asks for more is refused, naming it, before anything of it runs)."""
    import pickle

    import open_clip

    from ...checkpoint import UnreadableCheckpointError
    from ...errors import one_line

    try:
        return open_clip.create_model(name, pretrained=path, **kwargs)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        raise UnreadableCheckpointError(f"refusing to load {path}: " + (
            f"it would import {found.group(1)}" if found else one_line(str(err), 200))) from None
    except (EOFError, RuntimeError) as err:
        if "zip" not in str(err).lower() and not isinstance(err, EOFError):
            raise
        raise UnreadableCheckpointError(f"cannot read CLIP weights {path}: truncated or corrupt "
                                        f"({one_line(str(err), 120)})") from None


def create_clip(*, model_name: str | Sequence[str], pretrained: str = "", cache_dir: str | None = None,
                device: str | torch.device = "cpu", probe_timeout: float = PROBE_TIMEOUT_S) -> torch.nn.Module:
    """Build an open_clip CLIP model (eval mode).

    Args:
        model_name: architecture (see ``canonical_model_name``).
        pretrained: "" (random), a local checkpoint path, or an open_clip tag such as "openai".
        cache_dir: open_clip download cache (None = its defaults).
        device: where to place the model.
        probe_timeout: seconds for the network probe before a download.

    Returns:
        The open_clip model; ``model.visual.preprocess_cfg`` holds its input mean/std.

    Raises:
        ClipWeightsUnavailable: a tag that is not cached while offline.
        ClipActivationMismatch: a weights file recognised as OpenAI's with a plain-GELU architecture.
        FileNotFoundError: a weights path that does not exist.
        UnreadableCheckpointError: a weights file whose pickle asks for more than tensors, or a
            truncated one (nothing of it runs).
    """
    import open_clip

    register_model_configs()
    name = canonical_model_name(model_name)
    if open_clip.get_model_config(name) is None:
        raise ValueError(f"unknown CLIP architecture {name!r}; open_clip knows {open_clip.list_models()}")
    kwargs = dict(device=device, cache_dir=cache_dir)
    if not pretrained:
        model = open_clip.create_model(name, pretrained=None, **kwargs)
    elif is_weights_path(pretrained):
        if not os.path.isfile(pretrained):
            raise UserFileNotFoundError(f"MODEL.MASQ_CLIP.PRETRAINED={pretrained!r}: no such file")
        check_activation_for_weights(name, pretrained)
        model = _create_from_file(name, pretrained, kwargs)
    else:
        pcfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not pcfg:
            raise ValueError(f"unknown pretrained tag {pretrained!r} for {name!r}; known: "
                             f"{open_clip.list_pretrained_tags_by_model(name)} (or give a file path)")
        force = dict(mean=pcfg["mean"], std=pcfg["std"]) if "mean" in pcfg else None
        quick = bool(pcfg.get("quick_gelu", False))
        local = _cached_weights(pcfg, cache_dir)
        if local is not None:
            model = open_clip.create_model(name, pretrained=local, force_quick_gelu=quick,
                                           force_preprocess_cfg=force, **kwargs)
        else:
            host = HF_HOST if pcfg.get("hf_hub") else urlparse(pcfg.get("url", "")).hostname or HF_HOST
            if _offline_forced() or not _reachable(host, probe_timeout):
                raise ClipWeightsUnavailable(_offline_message(name, pretrained, cache_dir))
            model = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick, **kwargs)
    return model.eval()


def clip_mean_std(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) on the 0-1 scale that the model's images are normalised with."""
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return tuple(cfg.get("mean", OPENAI_DATASET_MEAN)), tuple(cfg.get("std", OPENAI_DATASET_STD))


def get_tokenizer(model_name: str | Sequence[str]):
    """open_clip's tokenizer for the architecture (bundled BPE vocabulary: no download)."""
    import open_clip

    register_model_configs()
    return open_clip.get_tokenizer(canonical_model_name(model_name))


def create_clip_from_config(cfg) -> torch.nn.Module:
    """``create_clip`` with MODEL.MASQ_CLIP.MODEL_NAME / PRETRAINED, on the CPU."""
    return create_clip(model_name=cfg.MODEL.MASQ_CLIP.MODEL_NAME, pretrained=cfg.MODEL.MASQ_CLIP.PRETRAINED)
