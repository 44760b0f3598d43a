"""One generic name -> object registry; each component kind declares its own in its build.py."""
from __future__ import annotations

from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class Registry:
    """Maps names (as written in configs) to classes or functions.

    >>> BACKBONE_REGISTRY = Registry("BACKBONE")
    >>> @BACKBONE_REGISTRY.register()
    ... def build_resnet_backbone(cfg): ...
    """

    def __init__(self, name: str):
        self.name = name
        self._obj: dict[str, object] = {}

    def register(self, obj: T | None = None, name: str | None = None) -> Callable[[T], T] | T:
        def deco(o: T) -> T:
            key = name or o.__name__
            if key in self._obj:
                raise KeyError(f"{key!r} is already registered in {self.name} registry")
            self._obj[key] = o
            return o

        return deco(obj) if obj is not None else deco

    def get(self, name: str):
        try:
            return self._obj[name]
        except KeyError:
            known = ", ".join(sorted(self._obj)) or "(none)"
            raise KeyError(f"no {name!r} in the {self.name} registry; known: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._obj

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._obj))

    def __repr__(self) -> str:
        return f"Registry({self.name}: {sorted(self._obj)})"
