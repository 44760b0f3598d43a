"""Vocabularies and their CLIP text embeddings, cached on disk by content hash.

A vocabulary is a list of classes; a class is a list of synonyms. Classes are separated by ";"
(or are list items), synonyms by ",": ``"cat; kitty, dog"`` -> ``[["cat"], ["kitty", "dog"]]`` and
``["wall, brick wall", "sky"]`` -> ``[["wall", "brick wall"], ["sky"]]``.

Embeddings follow the official recipe (docs/method.md#stage-c-masq-tuning): the CLIP text encoder
on the bare names (no prompt template), synonyms averaged, then L2-normalised; "background" is
appended as the last row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKGROUND = "background"
CACHE_FORMAT = 1  # bump when the embedding recipe changes: old cache files are then never read
CACHE_ENV = "MASQCLIP_CACHE"


def parse_vocabulary(vocabulary: str | Sequence[str]) -> list[list[str]]:
    """Classes with synonyms.

    Args:
        vocabulary: "a, a2; b" or ["a, a2", "b"] (empty items are dropped).

    Returns:
        One list of synonyms per class, e.g. [["a", "a2"], ["b"]].
    """
    items = vocabulary.split(";") if isinstance(vocabulary, str) else list(vocabulary)
    classes = []
    for item in items:
        synonyms = [s.strip() for s in str(item).split(",") if s.strip()]
        if synonyms:
            classes.append(synonyms)
    if not classes:
        raise ValueError(f"empty vocabulary: {vocabulary!r}")
    return classes


def default_cache_dir(configured: str = "") -> Path:
    """MODEL.MASQ_CLIP.TEXT_CACHE_DIR, else ``$MASQCLIP_CACHE/text``, else ``~/.cache/masqclip/text``."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "text"
    return Path("~/.cache/masqclip/text").expanduser()


def vocabulary_key(*, model_name: str, weights: str, classes: list[list[str]]) -> str:
    """Content hash of everything the embeddings depend on."""
    payload = json.dumps({"format": CACHE_FORMAT, "model": model_name, "weights": weights,
                          "classes": classes, "background": BACKGROUND}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class TextEmbedder:
    """Text embeddings of vocabularies (+ background) for one CLIP model, with a disk cache.

    Not an ``nn.Module`` on purpose: the text tower is not part of MasQ-Tuning checkpoints.
    """

    def __init__(self, *, encode_text: Callable[[torch.Tensor], torch.Tensor], tokenizer: Callable,
                 model_name: str, weights: str | None, cache_dir: str | os.PathLike | None = None):
        """
        Args:
            encode_text: token ids int64 [n, context] -> float [n, D] (e.g. ``clip.encode_text``).
            tokenizer: list[str] -> int64 [n, context] (open_clip tokenizer).
            model_name: architecture name (part of the cache key).
            weights: identity of the weights (``factory.weights_identity``); None = random weights,
                never cached.
            cache_dir: where cache files live (see ``default_cache_dir``).
        """
        self.encode_text = encode_text
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.weights = weights
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    @classmethod
    def from_clip(cls, clip: torch.nn.Module, *, model_name, pretrained: str,
                  cache_dir: str | os.PathLike | None = None) -> "TextEmbedder":
        """For an open_clip model built by ``factory.create_clip(model_name=..., pretrained=...)``."""
        from .factory import canonical_model_name, get_tokenizer, weights_identity

        return cls(encode_text=clip.encode_text, tokenizer=get_tokenizer(model_name),
                   model_name=canonical_model_name(model_name),
                   weights=weights_identity(pretrained) if pretrained else None, cache_dir=cache_dir)

    @torch.no_grad()
    def compute(self, classes: list[list[str]]) -> torch.Tensor:
        """float [K + 1, D]: normalised class embeddings, "background" last (no cache)."""
        names = [name for synonyms in classes for name in synonyms] + [BACKGROUND]
        feats = F.normalize(self.encode_text(self.tokenizer(names)).float(), dim=-1)
        owner = torch.tensor([i for i, syn in enumerate(classes) for _ in syn] + [len(classes)])
        summed = torch.zeros(len(classes) + 1, feats.shape[1]).index_add_(0, owner, feats)
        return F.normalize(summed / torch.bincount(owner).unsqueeze(1).float(), dim=-1)

    def __call__(self, vocabulary: str | Sequence[str]) -> torch.Tensor:
        """Embeddings of a vocabulary, from the cache when possible.

        Returns:
            float [K + 1, D] on the CPU, rows in vocabulary order, "background" last.
        """
        classes = parse_vocabulary(vocabulary)
        if self.weights is None:
            return self.compute(classes)
        path = self.cache_dir / f"{vocabulary_key(model_name=self.model_name, weights=self.weights, classes=classes)}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:  # a cache is disposable
                logger.warning("ignoring unreadable text-embedding cache %s (%s)", path, type(err).__name__)
                cached = {}
            if isinstance(cached, dict) and cached.get("classes") == classes:
                return cached["embeddings"]
        embeddings = self.compute(classes)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"classes": classes, "model": self.model_name, "weights": self.weights,
                    "embeddings": embeddings}, tmp)
        os.replace(tmp, path)
        return embeddings
