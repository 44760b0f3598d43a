"""A small detectron2-compatible configuration tree.

``CfgNode`` is a dict with attribute access that supports the three operations detectron2 users
expect: ``merge_from_file`` (YAML with ``_BASE_`` inheritance, relative to the including file),
``merge_from_list`` (``KEY VALUE`` pairs from a command line) and ``freeze``. Unknown keys are
errors that name the key and the file. YAML is read with a safe loader, so a config never runs code.
Setting a key that is accepted but ignored (``defaults.IGNORED_KEYS``) to a value other than its
default logs one warning line naming the key(s) and the file.
"""
from __future__ import annotations

import ast
import copy
import io
import logging
import os
from typing import Any, Iterable

import yaml

from ..errors import UserError

BASE_KEY = "_BASE_"
# Value types that may replace each other when merging (YAML has no tuples; CLI strings are parsed).
_COMPATIBLE = [(tuple, list), (list, tuple), (int, float)]
COMMAND_LINE = "the command line"
logger = logging.getLogger("masqclip.config")
_warned: set[str] = set()  # one warning per (source, keys, values) and process


class ConfigError(UserError, ValueError):
    """Raised for any invalid configuration: unknown key, bad type, unsafe or malformed YAML, a value
    out of range."""


class CfgNode(dict):
    """A nested, freezable configuration dict with attribute access."""

    _FROZEN = "__frozen__"

    def __init__(self, init: dict | None = None):
        super().__init__()
        object.__setattr__(self, CfgNode._FROZEN, False)
        for key, value in (init or {}).items():
            self[key] = CfgNode(value) if isinstance(value, dict) and not isinstance(value, CfgNode) else value

    # -- attribute access -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if self.is_frozen():
            raise AttributeError(f"config is frozen: cannot set {name!r} = {value!r}")
        if isinstance(value, dict) and not isinstance(value, CfgNode):
            value = CfgNode(value)
        self[name] = value

    def __deepcopy__(self, memo):
        return CfgNode({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def clone(self) -> "CfgNode":
        return copy.deepcopy(self)

    # -- freezing -----------------------------------------------------------------------------
    def freeze(self) -> "CfgNode":
        self._set_frozen(True)
        return self

    def defrost(self) -> "CfgNode":
        self._set_frozen(False)
        return self

    def is_frozen(self) -> bool:
        return object.__getattribute__(self, CfgNode._FROZEN)

    def _set_frozen(self, flag: bool) -> None:
        object.__setattr__(self, CfgNode._FROZEN, flag)
        for value in self.values():
            if isinstance(value, CfgNode):
                value._set_frozen(flag)

    # -- merging ------------------------------------------------------------------------------
    def merge_from_file(self, path: str | os.PathLike) -> "CfgNode":
        """Merge a YAML file (and, first, every file its ``_BASE_`` chain names) into this tree."""
        self._check_mutable()
        data = load_yaml_with_base(path)
        _merge_into(self, data, source=str(path))
        warn_ignored_keys(_leaves(data), str(path))
        return self

    def merge_from_other_cfg(self, other: dict, source: str = "<dict>") -> "CfgNode":
        self._check_mutable()
        _merge_into(self, other, source=source)
        warn_ignored_keys(_leaves(other), source)
        return self

    def merge_from_list(self, opts: Iterable[str]) -> "CfgNode":
        """Merge ``["MODEL.WEIGHTS", "x.pth", "SOLVER.BASE_LR", "0.1"]``-style overrides."""
        self._check_mutable()
        opts = list(opts)
        if len(opts) % 2:
            raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number: {opts}")
        merged = []
        for full_key, raw in zip(opts[0::2], opts[1::2]):
            node, parts = self, full_key.split(".")
            for depth, part in enumerate(parts[:-1]):
                if part not in node or not isinstance(node[part], CfgNode):
                    raise ConfigError(_unknown_key('.'.join(parts[:depth + 1]), COMMAND_LINE))
                node = node[part]
            leaf = parts[-1]
            if leaf not in node:
                raise ConfigError(_unknown_key(full_key, COMMAND_LINE))
            node[leaf] = _coerce(_parse_literal(raw), node[leaf], full_key, COMMAND_LINE)
            merged.append((full_key, node[leaf]))
        warn_ignored_keys(merged, COMMAND_LINE)
        return self

    def _check_mutable(self) -> None:
        if self.is_frozen():
            raise AttributeError("config is frozen; call defrost() first")

    # -- output -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, CfgNode) else _plain(v) for k, v in self.items()}

    def dump(self, **kwargs) -> str:
        """YAML text that ``merge_from_file`` reads back to an equal tree."""
        stream = io.StringIO()
        yaml.safe_dump(self.to_dict(), stream, sort_keys=False, **kwargs)
        return stream.getvalue()

    def flatten(self, prefix: str = "") -> dict[str, Any]:
        """``{"MODEL.WEIGHTS": ..., ...}``: one entry per leaf (for tracking systems)."""
        flat: dict[str, Any] = {}
        for key, value in self.items():
            name = f"{prefix}{key}"
            if isinstance(value, CfgNode):
                flat.update(value.flatten(name + "."))
            else:
                flat[name] = value
        return flat


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """``[("MODEL.WEIGHTS", value), ...]`` of a nested dict."""
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out.extend(_leaves(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def ignored_settings(pairs: Iterable[tuple[str, Any]]) -> list[tuple[str, Any, str]]:
    """``(key, value, why ignored)`` of each pair that sets an ignored key to a non-default value."""
    from .defaults import _C, ignored_reason

    found = []
    for key, value in pairs:
        reason = ignored_reason(key)
        if reason is None:
            continue
        default: Any = _C
        try:
            for part in key.split("."):
                default = default[part]
        except (KeyError, TypeError):  # a tree other than the defaults'
            continue
        try:
            value = _coerce(value, default, key, "")
        except ConfigError:
            pass
        if _plain(value) != _plain(default):
            found.append((key, value, reason))
    return found


def warn_ignored_keys(pairs: Iterable[tuple[str, Any]], source: str) -> None:
    """Log one line naming the ignored keys ``pairs`` set away from their defaults (once per process)."""
    found = ignored_settings(pairs)
    if not found:
        return
    listed = ", ".join(f"{key}={_plain(value)!r} [{reason}]" for key, value, reason in found)
    message = f"{source}: keys accepted but ignored by masqclip, set away from their defaults: {listed}"
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _parse_literal(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    """Return ``value`` converted to the type of ``default``, or raise naming key and source."""
    if default is None or value is None or isinstance(value, type(default)):
        if isinstance(default, tuple) and isinstance(value, list):
            return tuple(value)
        return value
    if isinstance(value, str) and isinstance(default, (list, tuple)):
        # a lone string where a list is expected: official configs write "res5" and ["res5"] alike
        return type(default)([value])
    for src, dst in _COMPATIBLE:
        if isinstance(value, src) and isinstance(default, dst) and not isinstance(value, bool):
            return dst(value)
    raise ConfigError(
        f"config key {key!r} in {source}: expected {type(default).__name__}, "
        f"got {type(value).__name__} ({value!r})"
    )


# Keys this package once had, with what replaces them (named in the unknown-key error).
REMOVED_KEYS = {
    "MODEL.MASQ_CLIP.BACKGROUND_WEIGHT": "the background's NLL weight is MODEL.MASK_FORMER.NO_OBJECT_WEIGHT "
                                         "and the loss is multiplied by MODEL.MASK_FORMER.CLASS_WEIGHT "
                                         "(BACKGROUND_WEIGHT w = NO_OBJECT_WEIGHT w with CLASS_WEIGHT 1.0)",
}


def _unknown_key(key: str, source: str) -> str:
    where = f"(from {COMMAND_LINE})" if source == COMMAND_LINE else f"in {source}"
    hint = REMOVED_KEYS.get(key)
    return f"unknown config key {key!r} {where}" + (f": it was removed; {hint}" if hint else "")


def _merge_into(dst: CfgNode, src: dict, source: str, prefix: str = "") -> None:
    for key, value in src.items():
        full = f"{prefix}{key}"
        if key not in dst:
            raise ConfigError(_unknown_key(full, source))
        if isinstance(dst[key], CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {full!r} in {source} is a section, got {value!r}")
            _merge_into(dst[key], value, source, full + ".")
        else:
            dst[key] = _coerce(value, dst[key], full, source)


class _SafeLoader(yaml.SafeLoader):
    """Safe YAML loader; the only extension is reading ``(a, b)`` flow strings as tuples later."""


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_SafeLoader)  # noqa: S506 - SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except (PermissionError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    except yaml.constructor.ConstructorError as err:
        raise ConfigError(
            f"{path}{_line_of(err)}: refusing a YAML tag that would run code ({err.problem}). Configs are read "
            "safely; write the value out literally instead (e.g. MIN_SIZE_TRAIN: [480, 512, ...] "
            "instead of !!python/object/apply:eval)."
        ) from None
    except yaml.YAMLError as err:
        what = " ".join(str(getattr(err, "problem", None) or err).split())
        context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
        if context and start is not None:
            what += f" ({' '.join(context.split())} that starts at line {start.line + 1})"
        raise ConfigError(f"{path}{_line_of(err)}: malformed YAML: {what}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of KEY: value, got a {type(data).__name__}")
    return _literal_tuples(data or {})


def _line_of(err: Exception) -> str:
    """``", line N, column C"`` of a YAML error (1-based), or ``""`` when the parser gave no position."""
    mark = getattr(err, "problem_mark", None)
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _literal_tuples(node: Any) -> Any:
    """detectron2 configs write tuples as strings like ``("coco_train",)``: parse those."""
    if isinstance(node, dict):
        return {k: _literal_tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_literal_tuples(v) for v in node]
    if isinstance(node, str) and node.startswith("(") and node.endswith(")"):
        try:
            parsed = ast.literal_eval(node)
        except (ValueError, SyntaxError):
            return node
        return tuple(parsed) if isinstance(parsed, (tuple, list)) else parsed
    return node


def load_yaml_with_base(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read ``path`` and recursively merge the files named by its ``_BASE_`` key (relative paths)."""
    path = os.path.abspath(str(path))
    if path in _seen:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(_seen + (path,))}")
    cfg = _read_yaml(path)
    bases = cfg.pop(BASE_KEY, None)
    if bases is None:
        return cfg
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        _deep_update(merged, load_yaml_with_base(base_path, _seen + (path,)))
    _deep_update(merged, cfg)
    return merged


def _deep_update(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value
