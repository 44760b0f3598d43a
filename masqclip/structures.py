"""Per-image containers passed between data, model and evaluation (detectron2's ``Instances``)."""
from __future__ import annotations

from typing import Any

import torch


class Instances:
    """A set of N objects of one image: every field is indexable along its first dimension.

    Ground truth uses ``gt_classes`` (int64 [N]) and ``gt_masks`` (bool [N, H, W]); predictions use
    ``pred_masks`` (bool/float [N, H, W]), ``pred_classes`` (int64 [N]) and ``scores`` (float [N]).
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any):
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: dict[str, Any] = {}
        for k, v in fields.items():
            self.set(k, v)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width)."""
        return self._image_size

    def set(self, name: str, value: Any) -> None:
        if self._fields and len(value) != len(self):
            raise ValueError(f"field {name!r} has length {len(value)}, expected {len(self)}")
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return dict(self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"Instances has no field {name!r}; fields: {list(self._fields)}") from None

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v.to(*args, **kwargs) if hasattr(v, "to") else v)
        return out

    def __getitem__(self, item: Any) -> "Instances":
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(item, None)
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v[item] if isinstance(v, torch.Tensor) else _index_list(v, item))
        return out

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    @staticmethod
    def cat(items: list["Instances"]) -> "Instances":
        if not items:
            raise ValueError("Instances.cat needs at least one element")
        out = Instances(items[0].image_size)
        for k in items[0]._fields:
            values = [i.get(k) for i in items]
            out.set(k, torch.cat(values) if isinstance(values[0], torch.Tensor) else sum(values, []))
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {tuple(v.shape) if hasattr(v, 'shape') else len(v)}" for k, v in self._fields.items())
        return f"Instances(num={len(self)}, image_size={self._image_size}, {fields})"


def _index_list(values: list, item: Any) -> list:
    if isinstance(item, slice):
        return values[item]
    if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
        return [v for v, keep in zip(values, item.tolist()) if keep]
    return [values[i] for i in (item.tolist() if isinstance(item, torch.Tensor) else item)]
