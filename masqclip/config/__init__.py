"""Configuration: detectron2-style YAML with ``_BASE_`` inheritance and ``KEY VALUE`` overrides."""
from .config import CfgNode, ConfigError, load_yaml_with_base
from .defaults import _C
from .validate import validate_config

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_yaml_with_base", "setup_cfg", "validate_config"]


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the defaults tree (``masqclip/config/defaults.py``)."""
    return _C.clone()


def setup_cfg(config_file: str | None = None, opts: list[str] | None = None, freeze: bool = True) -> CfgNode:
    """Defaults <- ``config_file`` <- ``opts``; the usual way a command builds its config.

    Raises:
        ConfigError: unknown key, wrong type, malformed YAML (file and line) or a value out of range.
    """
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts or [])
    validate_config(cfg, config_file or "")
    return cfg.freeze() if freeze else cfg
