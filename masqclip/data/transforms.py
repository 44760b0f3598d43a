"""Geometric augmentation: large-scale jitter (LSJ) for training, shortest-edge resize for testing.

A ``GeometricTransform`` is fully determined once sampled, so an image and all its label maps
(instance masks, semantic labels) go through exactly the same geometry: resize, then a window of
the resized image (crop where it is larger, pad bottom/right where it is smaller), then an optional
flip. Images are resized bilinearly (PIL), labels by nearest neighbour on the same pixel-centre grid.
Sampling takes an explicit ``numpy.random.Generator``: no global random state is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

FLIP_AXES = {"horizontal": -1, "vertical": -2}  # axis of an [..., H, W] array; "none" = no flip


@dataclass(frozen=True)
class GeometricTransform:
    """Resize ``in_size`` -> ``scaled_size``, keep the ``out_size`` window at ``offset`` (padding
    outside the resized image), then flip along ``flip_axis`` (``None`` = no flip).

    Sizes and offsets are (height, width) / (y, x) in pixels.
    """

    in_size: tuple[int, int]
    scaled_size: tuple[int, int]
    offset: tuple[int, int]
    out_size: tuple[int, int]
    flip_axis: int | None = None

    def apply_image(self, image: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
        """Args: image uint8 [H, W, C] (H, W = ``in_size``). Returns uint8 [out_h, out_w, C]."""
        if image.shape[:2] != self.in_size:
            raise ValueError(f"image of size {image.shape[:2]} given to a transform for {self.in_size}")
        sh, sw = self.scaled_size
        if (sh, sw) != self.in_size:
            image = np.asarray(Image.fromarray(image).resize((sw, sh), Image.BILINEAR))
            image = image.reshape(sh, sw, -1)
        (y0, x0), (oh, ow) = self.offset, self.out_size
        part = image[y0:y0 + oh, x0:x0 + ow].transpose(2, 0, 1)
        return self._place(part, pad_value).transpose(1, 2, 0)

    def apply_labels(self, labels: np.ndarray, pad_value: int = 0) -> np.ndarray:
        """Nearest-neighbour version for label maps.

        Args:
            labels: [..., H, W] of any dtype (bool masks [N, H, W], semantic ids [H, W]).
            pad_value: fill outside the resized image (0 for masks, the ignore label for semantics).
        Returns:
            [..., out_h, out_w], same dtype.
        """
        if labels.shape[-2:] != self.in_size:
            raise ValueError(f"labels of size {labels.shape[-2:]} given to a transform for {self.in_size}")
        (y0, x0), (oh, ow) = self.offset, self.out_size
        ys = _nearest_index(self.in_size[0], self.scaled_size[0])[y0:y0 + oh]  # only the window's rows
        xs = _nearest_index(self.in_size[1], self.scaled_size[1])[x0:x0 + ow]
        return self._place(labels[..., ys, :][..., xs], pad_value)

    def _place(self, part: np.ndarray, pad_value) -> np.ndarray:
        """[..., h, w] window content (h, w <= out size) -> padded bottom/right, then flipped."""
        out = np.full(part.shape[:-2] + self.out_size, pad_value, dtype=part.dtype)
        out[..., : part.shape[-2], : part.shape[-1]] = part
        return np.flip(out, self.flip_axis).copy() if self.flip_axis is not None else out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre when resizing ``n_in`` -> ``n_out`` pixels."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


@dataclass(frozen=True)
class LSJ:
    """Large-scale jitter: resize by a random factor of ``image_size`` (aspect kept, as detectron2's
    ``ResizeScale``), crop or pad to ``image_size`` x ``image_size`` (``FixedSizeCrop``), flip."""

    image_size: int
    min_scale: float
    max_scale: float
    flip: str = "horizontal"  # horizontal | vertical | none

    @classmethod
    def from_config(cls, cfg) -> "LSJ":
        return cls(image_size=cfg.INPUT.IMAGE_SIZE, min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE,
                   flip=cfg.INPUT.RANDOM_FLIP)

    def __post_init__(self) -> None:
        if self.flip not in (*FLIP_AXES, "none"):
            raise ValueError(f"INPUT.RANDOM_FLIP must be one of {[*FLIP_AXES, 'none']}, got {self.flip!r}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < INPUT.MIN_SCALE <= INPUT.MAX_SCALE, got {self.min_scale}, {self.max_scale}")

    def __call__(self, rng: np.random.Generator, size: tuple[int, int]) -> GeometricTransform:
        """Sample the transform of one image of ``size`` (height, width)."""
        h, w = size
        target = self.image_size * rng.uniform(self.min_scale, self.max_scale)
        scale = min(target / h, target / w)
        scaled = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        spare = np.maximum(np.subtract(scaled, self.image_size), 0)
        offset = tuple(int(v) for v in np.round(spare * rng.uniform(0.0, 1.0)))
        flip = self.flip != "none" and rng.uniform() < 0.5
        return GeometricTransform(in_size=(h, w), scaled_size=scaled, offset=offset,
                                  out_size=(self.image_size, self.image_size),
                                  flip_axis=FLIP_AXES[self.flip] if flip else None)


@dataclass(frozen=True)
class ResizeShortestEdge:
    """Test-time resize: shortest edge to ``short_edge`` unless the long edge would pass
    ``max_size`` (detectron2's ``ResizeShortestEdge``); ``short_edge`` 0 keeps the image as is."""

    short_edge: int
    max_size: int

    @classmethod
    def from_config(cls, cfg) -> "ResizeShortestEdge":
        return cls(short_edge=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST)

    def __call__(self, size: tuple[int, int]) -> GeometricTransform:
        h, w = size
        if self.short_edge <= 0:
            return GeometricTransform(in_size=(h, w), scaled_size=(h, w), offset=(0, 0), out_size=(h, w))
        scale = self.short_edge / min(h, w)
        nh, nw = h * scale, w * scale
        if max(nh, nw) > self.max_size:
            shrink = self.max_size / max(nh, nw)
            nh, nw = nh * shrink, nw * shrink
        scaled = (int(nh + 0.5), int(nw + 0.5))
        return GeometricTransform(in_size=(h, w), scaled_size=scaled, offset=(0, 0), out_size=scaled)
