"""Training checkpoints: periodic files, ``last_checkpoint``, and resume with the full trainer state.

File I/O goes through ``masqclip.checkpoint`` (``save_checkpoint`` is atomic: temp file + rename;
``load_checkpoint`` reports missing/unexpected keys). A training checkpoint holds ``model``,
``iteration``, ``optimizer``, ``scheduler``, ``scaler`` and ``rng`` (the RNG states of every rank).
"""
from __future__ import annotations

import os
import random
import re

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..utils.logger import get_logger
from .launch import get_rank, get_world_size

LAST_CHECKPOINT = "last_checkpoint"
FINAL_NAME = "model_final"
PERIODIC_PATTERN = re.compile(r"model_(\d{7})\.pth$")


def periodic_name(iteration: int) -> str:
    return f"model_{iteration:07d}"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as plain lists/tensors (safe for weights_only loads)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
             "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                       "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of ``rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"]), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _gather_rng() -> list[dict]:
    """Every rank's RNG state (collective under DDP)."""
    if get_world_size() == 1:
        return [rng_state()]
    states: list = [None] * get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def required_weight_keys(model: nn.Module) -> list[str]:
    """What a checkpoint must hold for ``model`` to be used as trained: its ``required_weight_keys()``
    when it has one (meta-architectures), else every state-dict name."""
    model = unwrap(model)
    method = getattr(model, "required_weight_keys", None)
    return list(method()) if callable(method) else list(model.state_dict())


def _by_prefix(keys) -> str:
    """``"backbone (120), sem_seg_head (98)"``: counts of names per first component."""
    counts: dict[str, int] = {}
    for key in keys:
        head = key.split(".", 1)[0]
        counts[head] = counts.get(head, 0) + 1
    return ", ".join(f"{head} ({n})" for head, n in sorted(counts.items())) or "none"


def load_model_weights(model: nn.Module, path: str, *, strict: bool = False) -> tuple[list[str], list[str]]:
    """Load ``path`` into ``model`` by name, strictly (to use the model as trained) or partially (to start training).

    Strict (evaluation, prediction, and a MasQ-Tuning model's frozen mask generator): a file that
    lacks any of ``required_weight_keys(model)`` or gives one of them another shape is refused with a
    ``CheckpointError`` naming those tensors; nothing is loaded.

    Partial (``MODEL.WEIGHTS`` when training starts: ImageNet backbones, a teacher into its student):
    whatever matches is loaded, tensors whose shape differs are skipped with a warning, as detectron2
    does (``criterion.empty_weight`` has NUM_CLASSES + 1 entries: 2 in a teacher, vocabulary + 1 in
    MasQ-Tuning); one line says how many tensors per top-level module were loaded and which stayed
    as initialised. Resuming, by contrast, is always strict (``Checkpointer.resume_or_load``).

    Returns:
        (missing keys, unexpected keys).

    Raises:
        CheckpointError (a ``UserError``): strict and incomplete / wrong shapes; unreadable or refused
            file; or not one of the model's parameters is in the file (the wrong checkpoint).
    """
    from ..checkpoint import CheckpointError, load_checkpoint

    target = unwrap(model)
    required = required_weight_keys(target) if strict else None
    missing, unexpected, _ = load_checkpoint(target, path, strict_shapes=strict, required=required)
    own = target.state_dict()
    if len(missing) == len(own):
        raise CheckpointError(f"{path} holds none of this model's parameters (it has e.g. {unexpected[:3]})")
    left = set(missing)
    loaded = [k for k in own if k not in left]
    get_logger("engine").info("loaded %d of %d tensors from %s: %s; left as initialised: %s; ignored from the "
                              "file: %d", len(loaded), len(own), path, _by_prefix(loaded), _by_prefix(missing),
                              len(unexpected))
    return missing, unexpected


class Checkpointer:
    """Saves and restores the model plus the objects that make a run resumable.

    Args:
        model: the model (DDP wrappers are unwrapped).
        output_dir: where checkpoints and ``last_checkpoint`` live.
        optimizer, scheduler, scaler: saved and restored with ``state_dict`` when given.
        keep: periodic checkpoints kept (older ones are deleted); ``model_final.pth`` is never deleted.
    """

    def __init__(self, *, model: nn.Module, output_dir: str, optimizer=None, scheduler=None, scaler=None,
                 keep: int = 2):
        self.model, self.output_dir = model, output_dir
        self.objects = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        self.keep = keep
        self.logger = get_logger("engine")
        self.metadata: dict = {}  # plain entries saved in every checkpoint (the config, CLIP provenance)

    def path(self, name: str) -> str:
        return os.path.join(self.output_dir, f"{name}.pth")

    def save(self, name: str, iteration: int) -> str | None:
        """Write ``<name>.pth`` and point ``last_checkpoint`` at it (rank 0; collective under DDP).

        Returns:
            The path written (None on ranks other than 0).
        """
        from ..checkpoint import save_checkpoint

        rng = _gather_rng()
        if get_rank() != 0:
            return None
        path = self.path(name)
        state = unwrap(self.model).state_dict()
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise FloatingPointError(f"refusing to save {path} (iteration {iteration}): non-finite values in "
                                     f"{', '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
        extra = {k: obj.state_dict() for k, obj in self.objects.items() if obj is not None}
        save_checkpoint(path, unwrap(self.model), iteration=iteration, rng=rng, **self.metadata, **extra)
        _write_text_atomic(os.path.join(self.output_dir, LAST_CHECKPOINT), os.path.basename(path))
        self._prune()
        self.logger.info("saved checkpoint %s (iteration %d)", path, iteration)
        return path

    def _prune(self) -> None:
        periodic = sorted(f for f in os.listdir(self.output_dir) if PERIODIC_PATTERN.match(f))
        for name in periodic[:max(len(periodic) - self.keep, 0)]:
            os.remove(os.path.join(self.output_dir, name))

    def last_checkpoint(self) -> str | None:
        """The file ``last_checkpoint`` names, if it and that file exist."""
        pointer = os.path.join(self.output_dir, LAST_CHECKPOINT)
        if not os.path.isfile(pointer):
            return None
        with open(pointer, encoding="utf-8") as fh:
            path = os.path.join(self.output_dir, fh.read().strip())
        return path if os.path.isfile(path) else None

    def resume_candidates(self) -> list[str]:
        """Checkpoints to resume from, newest first: the one ``last_checkpoint`` names, then the
        periodic ``model_NNNNNNN.pth`` files by iteration (the fallbacks when a newer one is unreadable)."""
        if not os.path.isdir(self.output_dir):
            return []
        periodic = sorted((f for f in os.listdir(self.output_dir) if PERIODIC_PATTERN.match(f)), reverse=True)
        candidates = [os.path.join(self.output_dir, f) for f in periodic]
        last = self.last_checkpoint()
        if last is not None:
            candidates = [last] + [c for c in candidates if os.path.abspath(c) != os.path.abspath(last)]
        return candidates

    def resume_or_load(self, weights: str, *, resume: bool) -> int:
        """Resume from the newest readable checkpoint when ``resume`` and one exists, else load ``weights``.

        A newest checkpoint that cannot be read (truncated by a crash, corrupt) is reported in one
        warning line naming it, and the next older one is used; when none can be read the run stops
        (``CheckpointError``) rather than silently starting over.

        Returns:
            The first iteration to run (0 unless resuming).
        """
        from ..checkpoint import CheckpointError, UnreadableCheckpointError, load_checkpoint

        candidates = self.resume_candidates() if resume else []
        for last in candidates:
            try:
                missing, unexpected, rest = load_checkpoint(unwrap(self.model), last)
            except UnreadableCheckpointError as err:
                self.logger.warning("--resume: %s; trying the previous checkpoint", err)
                continue
            break
        else:
            if candidates:
                raise CheckpointError(f"--resume: none of the {len(candidates)} checkpoint(s) in {self.output_dir} "
                                      "can be read (see the warnings); delete them to start this run anew")
            if resume:
                self.logger.info("--resume: no checkpoint in %s yet; starting from scratch", self.output_dir)
            if weights:
                load_model_weights(self.model, weights,
                                   strict=getattr(unwrap(self.model), "requires_weights_for_training", False))
            return 0
        if missing or unexpected:
            raise RuntimeError(f"cannot resume from {last}: missing keys {missing}, unexpected keys {unexpected}")
        for key, obj in self.objects.items():
            if obj is not None:
                if key not in rest:
                    raise RuntimeError(f"cannot resume from {last}: it has no {key!r} state")
                obj.load_state_dict(rest[key])
        rng = rest.get("rng") or []
        if rng:
            if len(rng) != get_world_size():
                self.logger.warning("checkpoint holds RNG states of %d ranks, this run has %d: using rank 0's",
                                    len(rng), get_world_size())
            set_rng_state(rng[get_rank()] if len(rng) == get_world_size() else rng[0])
        iteration = int(rest["iteration"])
        self.logger.info("resumed from %s: continuing at iteration %d", last, iteration + 1)
        return iteration + 1
