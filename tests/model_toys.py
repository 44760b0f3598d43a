"""Tiny model inputs and a short training loop shared by the modeling and precision tests (not a test module)."""
from __future__ import annotations

import torch

from masqclip.structures import Instances


def blob_image(size: int = 64, seed: int = 0, *, classes: tuple[int, int] = (0, 0), striped: bool = False) -> dict:
    """A bright square and disc on a noisy background, with their masks, as one model input.

    Args:
        classes: ``gt_classes`` of (square, disc).
        striped: give the disc a stripe texture (so its appearance, not only its colour, identifies it).
    """
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, size, size, generator=gen) * 60
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    square = (yy > size // 8) & (yy < size // 2) & (xx > size // 8) & (xx < size // 2)
    disc = (yy - 0.7 * size) ** 2 + (xx - 0.65 * size) ** 2 < (0.2 * size) ** 2
    image[0][square] += 180
    image[2][disc] += 150 + (40 * ((xx[disc] // 3) % 2) if striped else 0)
    inst = Instances((size, size), gt_classes=torch.tensor(classes), gt_masks=torch.stack([square, disc]))
    return {"image": image.clamp(0, 255), "height": size, "width": size, "instances": inst}


def train_losses(model: torch.nn.Module, trainer_cls, steps: int, **kwargs) -> list[float]:
    """Total loss per step of ``steps`` AdamW steps on pairs of :func:`blob_image` inputs (fixed seeds),
    with ``trainer_cls(model=..., data_loader=..., optimizer=..., **kwargs)``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = ([blob_image(seed=2 * i), blob_image(seed=2 * i + 1)] for i in range(steps))
    trainer = trainer_cls(model=model, data_loader=data, optimizer=opt, **kwargs)
    torch.manual_seed(1)
    trainer.train(0, steps)
    return [v for _, v in trainer.storage._history["total_loss"]]
