"""Errors caused by what a user gave (files, names, numbers), as opposed to bugs.

The command line prints a ``UserError`` as one line, ``masqclip: error: <message>``, and exits with
status 2; the traceback is shown only with ``masqclip --debug``. Raise one where the cause is the
input and the message can say which file, key or name is wrong and why.
"""
from __future__ import annotations

import difflib
from typing import Iterable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input: the message names the file / key / name and what is wrong with it (one line)."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file the user named does not exist."""

    def __str__(self) -> str:  # FileNotFoundError(msg) would otherwise print as-is; keep it explicit
        return str(self.args[0]) if self.args else ""


def closest(name: str, known: Iterable[str], n: int = 3) -> str:
    """`` (did you mean 'a', 'b'?)`` for the registered names closest to ``name``, else ``""``."""
    matches = difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ""


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on a single line (whitespace runs folded), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."
