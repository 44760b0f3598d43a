"""Every config key is either read by the package or declared accepted-but-ignored, and setting an
ignored key away from its default warns (one line, naming the key and the file)."""
from __future__ import annotations

import ast
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from masqclip.config import get_cfg, setup_cfg
from masqclip.config.defaults import IGNORED_KEYS, ignored_reason

PACKAGE = Path(__file__).resolve().parents[1] / "masqclip"
DEFAULTS = PACKAGE / "config" / "defaults.py"


def _attribute_chain(node: ast.AST) -> tuple[str | None, list[str]]:
    """``cfg.MODEL.MASK_FORMER.TEST`` -> ("cfg", ["MODEL", "MASK_FORMER", "TEST"])."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), attrs[::-1]


def keys_read_in_package(keys: set[str]) -> set[str]:
    """The config keys some attribute access in masqclip/ (outside defaults.py) reads.

    ``cfg.SOLVER.BASE_LR`` reads SOLVER.BASE_LR wherever the chain starts (``cfg``, ``self.cfg``);
    inside a function, ``s = cfg.SOLVER`` makes ``s.BASE_LR`` read it too. Comments, docstrings and
    strings (e.g. override names the pipeline writes) do not count.
    """
    sections = {".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 1)}
    roots = {k.split(".")[0] for k in keys}

    def resolve(attrs: list[str]) -> list[str]:
        """Every key or section the chain names, trying each top-level name in it as the root."""
        named = []
        for start, attr in enumerate(attrs):
            if attr in roots:
                for end in range(start + 1, len(attrs) + 1):
                    path = ".".join(attrs[start:end])
                    if path in keys or path in sections:
                        named.append(path)
        return named

    read: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path == DEFAULTS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
            aliases: dict[str, str] = {}
            for node in ast.walk(scope):
                if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                        and isinstance(node.value, ast.Attribute)):
                    root, attrs = _attribute_chain(node.value)
                    attrs = aliases[root].split(".") + attrs if root in aliases else attrs
                    named = resolve(attrs)
                    if named and named[-1] in sections and named[-1].endswith(attrs[-1]):
                        aliases[node.targets[0].id] = named[-1]
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute):
                    root, attrs = _attribute_chain(node)
                    attrs = aliases[root].split(".") + attrs if root in aliases else attrs
                    read.update(p for p in resolve(attrs) if p in keys)
    return read


def test_every_key_is_read_or_declared_ignored():
    keys = set(get_cfg().flatten())
    read = keys_read_in_package(keys)
    ignored = {k for k in keys if ignored_reason(k) is not None}
    assert not keys - read - ignored, f"neither read by masqclip/ nor in IGNORED_KEYS: {sorted(keys - read - ignored)}"
    assert not read & ignored, f"in IGNORED_KEYS but read by the package: {sorted(read & ignored)}"
    sections = {".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 2)}
    assert set(IGNORED_KEYS) <= sections, "IGNORED_KEYS names keys or sections that do not exist"


def test_scanner_sees_aliases_and_ignores_strings():
    keys = set(get_cfg().flatten())
    read = keys_read_in_package(keys)
    # read through aliases: c = cfg.SOLVER.CLIP_GRADIENTS; c.ENABLED / mf = cfg.MODEL.MASK_FORMER; mf.TEST.X
    assert {"SOLVER.CLIP_GRADIENTS.ENABLED", "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD",
            "TEST.INFERENCE_LOG_PERIOD", "CUDNN_BENCHMARK"} <= read
    assert "TEST.AUG.ENABLED" not in read and "MODEL.SWIN.EMBED_DIM" not in read


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def config_warnings():
    from masqclip.config import config as config_module

    config_module._warned.clear()  # each warning is logged once per process: start afresh
    handler = _Lines()
    logger = logging.getLogger("masqclip.config")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_paper_and_synthetic_configs_load_without_warnings(repo_dir, config_warnings):
    files = sorted((repo_dir / "config" / "models").rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        setup_cfg(str(path))
    assert config_warnings == []


def test_official_style_values_load_and_warn_once_naming_keys_and_file(tmp_path, repo_dir, config_warnings):
    """An official Mask2Former-style semantic config: its crop, mapper and test-time augmentation
    values load (the code does LSJ and single-scale instead) and are named in one warning."""
    path = tmp_path / "ade20k_semantic_official_style.yaml"
    path.write_text(textwrap.dedent(f"""\
        _BASE_: {repo_dir / "config/models/cross-dataset/test/ade20k-150-semantic.yaml"}
        INPUT:
          FORMAT: "RGB"
          CROP:
            ENABLED: True
            TYPE: "absolute"
            SIZE: (640, 640)
            SINGLE_CATEGORY_MAX_AREA: 1.0
          DATASET_MAPPER_NAME: "mask_former_semantic"
          SIZE_DIVISIBILITY: 640
        TEST:
          AUG: {{ENABLED: False, MIN_SIZES: [320, 480, 640], MAX_SIZE: 4480, FLIP: True}}
        """))
    cfg = setup_cfg(str(path), ["TEST.AUG.ENABLED", "True"])
    assert cfg.INPUT.CROP.SIZE == [640, 640] and cfg.TEST.AUG.ENABLED is True
    assert len(config_warnings) == 2
    from_file, from_cli = config_warnings
    assert from_file.startswith(f"{path}: ") and "\n" not in from_file
    for key in ("INPUT.CROP.ENABLED", "INPUT.CROP.TYPE", "INPUT.CROP.SIZE", "INPUT.DATASET_MAPPER_NAME",
                "INPUT.SIZE_DIVISIBILITY", "TEST.AUG.MIN_SIZES", "TEST.AUG.MAX_SIZE"):
        assert f"{key}=" in from_file, key
    for at_default in ("INPUT.FORMAT", "SINGLE_CATEGORY_MAX_AREA", "TEST.AUG.ENABLED", "TEST.AUG.FLIP"):
        assert f"{at_default}=" not in from_file, at_default
    assert from_cli.startswith("the command line: ") and "TEST.AUG.ENABLED=True" in from_cli
    setup_cfg(str(path))  # the same file again: no second warning in this process
    assert len(config_warnings) == 2


def test_cli_prints_one_warning_line_and_succeeds(tmp_path, repo_dir):
    path = tmp_path / "aug.yaml"
    path.write_text(f"_BASE_: {repo_dir / 'config/models/synthetic/teacher.yaml'}\nTEST:\n  AUG:\n    ENABLED: True\n")
    proc = subprocess.run([sys.executable, "-m", "masqclip.cli", "config", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "ignored" in line]
    assert len(warning) == 1 and str(path) in warning[0] and "TEST.AUG.ENABLED=True" in warning[0]
    assert "AUG:\n    ENABLED: true" in proc.stdout  # the value is kept in the merged config


# Two detectron2 keys that are implemented rather than ignored.

def test_cudnn_benchmark_is_applied_by_default_setup(tmp_path):
    import torch

    from masqclip.engine.defaults import default_setup

    saved = torch.backends.cudnn.benchmark
    try:
        for flag in (True, False):
            default_setup(setup_cfg(None, ["CUDNN_BENCHMARK", str(flag), "OUTPUT_DIR", str(tmp_path), "SEED", "1"]),
                          rank=0)
            assert torch.backends.cudnn.benchmark is flag
    finally:
        torch.backends.cudnn.benchmark = saved


def test_inference_log_period_paces_progress_lines(tiny_world, repo_dir, monkeypatch):
    from masqclip.engine.defaults import evaluate_datasets
    from masqclip.modeling import build_model

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tiny_world))
    handler = _Lines()
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("masqclip.evaluation.evaluator")
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        counts = {}
        for period in (2, 0):
            cfg = setup_cfg(str(repo_dir / "config/models/synthetic/teacher.yaml"),
                            ["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0", "TEST.INFERENCE_LOG_PERIOD",
                             str(period)])
            handler.lines.clear()
            evaluate_datasets(cfg, build_model(cfg), ["synthetic_instance_val_all"])
            counts[period] = sum(line.startswith("inference ") and "batches" in line for line in handler.lines)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert counts == {2: 3, 0: 0}  # 6 test images, one per batch
