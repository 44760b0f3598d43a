"""Contrastive pre-training of a small CLIP on captioned crops (our stand-in for web-scale CLIP).

Crops come as ``<root>/{train,val}.jsonl`` with one ``{"file", "category", "caption"}`` per line
(docs/architecture.md). Training is CLIP's symmetric image<->text cross-entropy with one change
for a world with few categories: a batch holds many crops of the same category, so every
caption of the same category counts as a positive (soft targets spread evenly over them) instead
of as a false negative. AdamW, linear warm-up, cosine decay, gradient-norm clipping (without
warm-up the tiny model collapses, docs/method.md#the-miniature). Evaluation: zero-shot top-1 accuracy of the
val crops over all categories, with the bare class names as prompts (synonyms averaged), exactly
as MasQ-Tuning embeds its vocabularies.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import UserFileNotFoundError
from .factory import canonical_model_name, clip_mean_std, create_clip, get_tokenizer
from .text import TextEmbedder, parse_vocabulary


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of ``masqclip pretrain-clip`` (each is a command-line flag)."""

    model_name: str = "masqclip-tiny"
    epochs: float = 8.0  # passes over the train crops (8 x 68 steps; the embedded default runs 6, config/config.yaml)
    minutes: float = 0.0  # > 0: also stop after this much wall time (the cosine then follows time)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    min_lr_ratio: float = 0.02  # cosine decays to lr * this
    grad_clip: float = 1.0
    eval_batch_size: int = 256
    seed: int = 0


@dataclass
class CropSet:
    """Crops of one split: images uint8 [N, 3, S, S], category index int64 [N], captions, class names."""

    images: torch.Tensor
    labels: torch.Tensor
    captions: list[str]
    categories: list[str]


def load_crops(root: str | Path, split: str, categories: list[str] | None = None) -> CropSet:
    """Read ``<root>/<split>.jsonl`` and its PNGs into memory.

    Args:
        root: the ``clip_crops`` folder.
        split: "train" or "val".
        categories: class order to use (default: order of first appearance).
    """
    root = Path(root)
    index = root / f"{split}.jsonl"
    if not index.is_file():
        raise UserFileNotFoundError(f"{index} not found: generate the crops with 'masqclip prepare synthetic'")
    rows = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    categories = list(categories or dict.fromkeys(r["category"] for r in rows))
    lookup = {name: i for i, name in enumerate(categories)}
    unknown = {r["category"] for r in rows} - set(lookup)
    if unknown:
        raise ValueError(f"{index}: categories {sorted(unknown)} are not in the training categories")
    images = np.stack([np.asarray(Image.open(root / r["file"]).convert("RGB")) for r in rows])
    return CropSet(images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                   labels=torch.tensor([lookup[r["category"]] for r in rows]),
                   captions=[r["caption"] for r in rows], categories=categories)


def _normalize(images: torch.Tensor, size: tuple[int, int], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, h, w] -> CLIP input float [B, 3, *size]."""
    x = images.float() / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def lr_at(step: int, progress: float, cfg: PretrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then cosine decay to ``cfg.lr * cfg.min_lr_ratio``.

    Args:
        step: optimizer steps taken.
        progress: fraction of the budget used (steps or wall time, whichever is further), 0..1.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, max(0.0, progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def contrastive_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, labels: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss with every same-category pair a positive.

    Args:
        image_feats, text_feats: float [B, D], L2-normalised; labels: int64 [B] categories.
        logit_scale: log of the temperature multiplier (open_clip's ``logit_scale``).
    """
    logits = logit_scale.exp() * image_feats @ text_feats.t()
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(dim=1), dim=1).mean()
                  + torch.sum(-target * logits.t().log_softmax(dim=1), dim=1).mean())


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, crops: CropSet, *, batch_size: int) -> dict:
    """Top-1 accuracy of the crops over ``crops.categories`` with bare class names as prompts.

    Returns:
        {"top1": percent, "per_category": {name: percent}}.
    """
    was_training = model.training
    model.eval()
    embedder = TextEmbedder(encode_text=model.encode_text, tokenizer=tokenizer, model_name="", weights=None)
    text = embedder.compute(parse_vocabulary(crops.categories))[:-1]  # drop "background"
    mean, std = (torch.tensor(v) for v in clip_mean_std(model))
    preds = []
    for start in range(0, len(crops.labels), batch_size):
        x = _normalize(crops.images[start:start + batch_size], tuple(model.visual.image_size), mean, std)
        preds.append((model.encode_image(x, normalize=True) @ text.t()).argmax(dim=1))
    correct = (torch.cat(preds) == crops.labels).float()
    per_cat = {name: 100.0 * correct[crops.labels == i].mean().item()
               for i, name in enumerate(crops.categories) if (crops.labels == i).any()}
    model.train(was_training)
    return {"top1": 100.0 * correct.mean().item(), "per_category": per_cat}


def _train_used_tokens_only(model: torch.nn.Module, tokens: torch.Tensor):
    """Swap the token embedding for one holding only the rows ``tokens`` use, until written back.

    The vocabulary (49408 x width) is ~88% of the tiny CLIP's parameters, but the captions use a
    few dozen tokens. The other rows get zero gradients; with AdamW and no weight decay on
    embeddings they never move, yet the full table costs a dense gradient, a gradient-norm term and
    an optimizer update every step. Training only the used rows gives the same weights (AdamW is
    element-wise) for a fraction of the cost. Token ids are renumbered in increasing order, so the
    end-of-text token stays each caption's largest id (the text tower pools at the argmax).

    Returns:
        (tokens renumbered into the compact table, a function writing the trained rows back into
        the full embedding and restoring it on the model).
    """
    full = model.token_embedding
    used = tokens.unique()  # sorted
    # from_pretrained draws no random numbers (a fresh nn.Embedding would advance the global RNG)
    compact = torch.nn.Embedding.from_pretrained(full.weight.detach()[used.to(full.weight.device)], freeze=False)
    model.token_embedding = compact

    def write_back() -> None:
        with torch.no_grad():
            full.weight[used.to(full.weight.device)] = compact.weight
        model.token_embedding = full

    return torch.searchsorted(used, tokens), write_back


def pretrain_clip(crops_root: str | Path, cfg: PretrainConfig, *, device: torch.device | str = "cpu",
                  log=print, compact: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train ``cfg.model_name`` from random weights on the crops; evaluate zero-shot on val.

    Args:
        compact: train only the token-embedding rows the captions use (the same weights, a
            quarter less time per step); False trains the full vocabulary table.

    Returns:
        (model on the CPU, metrics dict).
    """
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train = load_crops(crops_root, "train")
    val = load_crops(crops_root, "val", categories=train.categories)
    model = create_clip(model_name=cfg.model_name, pretrained="", device=device).train()
    tokenizer = get_tokenizer(cfg.model_name)
    tokens = tokenizer(train.captions)
    write_back = None
    if compact and isinstance(getattr(model, "token_embedding", None), torch.nn.Embedding):
        tokens, write_back = _train_used_tokens_only(model, tokens)
    mean, std = (torch.tensor(v, device=device) for v in clip_mean_std(model))
    size = tuple(model.visual.image_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = max(1, len(train.labels) // cfg.batch_size)
    total = max(1, int(cfg.epochs * steps_per_epoch))
    budget_s = cfg.minutes * 60 if cfg.minutes > 0 else math.inf
    start, cpu_start, step, losses = time.monotonic(), time.process_time(), 0, []
    deadline = start + budget_s
    while step < total and time.monotonic() < deadline:
        for batch in torch.randperm(len(train.labels), generator=generator).split(cfg.batch_size):
            if len(batch) < cfg.batch_size or step >= total or time.monotonic() >= deadline:
                break
            progress = max(step / total, (time.monotonic() - start) / budget_s)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, progress, cfg)
            images = train.images[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            x = _normalize(images.to(device), size, mean, std)
            image_feats = model.encode_image(x, normalize=True)
            text_feats = model.encode_text(tokens[batch].to(device), normalize=True)
            loss = contrastive_loss(image_feats, text_feats, train.labels[batch].to(device), model.logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            step += 1
            if step % steps_per_epoch == 0:
                log(f"step {step}/{total} loss {np.mean(losses[-steps_per_epoch:]):.4f} "
                    f"lr {optimizer.param_groups[0]['lr']:.2e} {time.monotonic() - start:.0f}s")
    if write_back is not None:
        write_back()
    model = model.cpu().eval()
    accuracy = zero_shot_accuracy(model, tokenizer, val, batch_size=cfg.eval_batch_size)
    metrics = {"model_name": canonical_model_name(cfg.model_name), "zero_shot_top1": accuracy["top1"],
               "zero_shot_per_category": accuracy["per_category"], "categories": train.categories,
               "num_train_crops": len(train.labels), "num_val_crops": len(val.labels), "steps": step,
               "seconds": time.monotonic() - start, "cpu_seconds": time.process_time() - cpu_start, "final_loss": float(np.mean(losses[-10:])) if losses else None,
               "config": asdict(cfg)}
    log(f"zero-shot top-1 on {len(val.labels)} val crops over {len(train.categories)} categories: "
        f"{accuracy['top1']:.1f}%")
    return model, metrics


def save_pretrained(path: str | Path, model: torch.nn.Module, metrics: dict) -> None:
    """Write a checkpoint that ``create_clip(pretrained=path)`` loads (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "model_name": metrics["model_name"],
                "zero_shot_top1": metrics["zero_shot_top1"]}, tmp)
    tmp.replace(path)
