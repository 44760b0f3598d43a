"""Read pickle files without running code from them.

A pickle can name any importable callable and have it called (``os.system`` included), so every
pickle the package reads (detectron2 model-zoo ``.pkl`` weights, dataset index files) goes through
``load``: a restricted unpickler that admits plain containers, numbers, strings, bytes and numpy
arrays, scalars and dtypes. Anything else is refused before it is imported, with a ``PickleRefused``
naming the file and the global it asked for.
"""
from __future__ import annotations

import codecs
import os
import pickle
from typing import Any, BinaryIO

from ..errors import UserError

# numpy's pickle helpers, under both the numpy 1.x and 2.x module names.
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
_NUMPY_FUNCTIONS = ("_reconstruct", "scalar", "_frombuffer")
# Text codecs a protocol-2 pickle uses to store bytes (``_codecs.encode(text, "latin1")``).
_BYTES_CODECS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


class PickleRefused(UserError, pickle.UnpicklingError):
    """A pickle asked for something the restricted unpickler does not admit."""


def _encode_latin1(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The only use of ``_codecs.encode`` admitted: protocol 2's way of storing ``bytes``."""
    if codecs.lookup(encoding).name not in {codecs.lookup(c).name for c in _BYTES_CODECS}:
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r}")
    return codecs.encode(text, encoding, errors)


def numpy_globals() -> list[Any]:
    """numpy's array, scalar and dtype constructors: the allow-list that lets ``torch.load(weights_only=True)``
    read numpy arrays too (``torch.serialization.safe_globals``)."""
    return [obj for (module, _), obj in _allowed().items() if module.startswith("numpy")]


def _allowed() -> dict[tuple[str, str], Any]:
    import collections

    import numpy as np

    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray, ("builtins", "slice"): slice,
        ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): _encode_latin1,
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    }
    for module in _NUMPY_MODULES:
        try:
            mod = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        for name in _NUMPY_FUNCTIONS:
            if hasattr(mod, name):
                table[(module, name)] = getattr(mod, name)
    # numpy >= 1.25 names each dtype class (numpy.dtypes.Float32DType); pickles may refer to them
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                table[("numpy.dtypes", name)] = getattr(dtypes, name)
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the entries of an allow-list."""

    def __init__(self, file: BinaryIO, *, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self._table = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise PickleRefused(f"it would import {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise PickleRefused("it uses persistent ids (external objects), which plain data never needs")


def load(path: str | os.PathLike, *, encoding: str = "ASCII") -> Any:
    """The object pickled in ``path``, admitting only plain data and numpy arrays.

    Args:
        encoding: how Python 2 ``str`` objects are decoded ("latin1" for old model-zoo files).
    Raises:
        PickleRefused: "refusing to load PATH: it would import MODULE.NAME" (nothing was imported).
        UserError: the file is missing, truncated or not a pickle (message names the path).
    """
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding=encoding).load()
    except PickleRefused as err:
        raise PickleRefused(f"refusing to load {path}: {err}") from None
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OSError) as err:
        reason = "the file ends early (truncated?)" if isinstance(err, EOFError) else f"{type(err).__name__}: {err}"
        raise UserError(f"cannot read {path} as a pickle: {reason}") from None
