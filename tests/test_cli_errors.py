"""A user's mistake is one line, ``masqclip: error: ...``, exit status 2 and no traceback (unless
``masqclip --debug``), for every kind of bad input; each case runs the real command in a process."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from masqclip.checkpoint import save_checkpoint
from masqclip.config import ConfigError, setup_cfg
from masqclip.data.catalog import DatasetCatalog, UnknownDatasetError
from masqclip.data.datasets import DatasetNotFoundError
from masqclip.errors import UserError

from test_cli_train_eval import TINY
from test_safe_loading import assert_user_error, run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny config, its model's complete checkpoint, a truncated copy, an image and a non-image."""
    from masqclip.modeling import build_model

    root = tmp_path_factory.mktemp("cli_errors")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "TRACKING": {"ENABLED": False}}))
    torch.manual_seed(0)
    weights = save_checkpoint(root / "model.pth", build_model(setup_cfg(str(config))))
    truncated = root / "model_truncated.pth"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    image = root / "photo.png"
    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(image)
    text = root / "notes.png"
    text.write_text("not an image\n")
    return {"root": root, "config": config, "weights": weights, "truncated": truncated, "image": image, "text": text}


def test_predict_input_errors(files):
    f = files
    predict = ["predict", "--config-file", f["config"], "--weights", f["weights"], "--output", f["root"] / "o.png"]
    assert_user_error(run_cli(*predict, "--image", f["root"] / "missing.png"), "image not found",
                      str(f["root"] / "missing.png"))
    assert_user_error(run_cli(*predict, "--image", f["text"]), str(f["text"]), "not an image")
    assert_user_error(run_cli(*predict, "--image", f["image"], "--vocab", " ; , "), "--vocab", "names no class")
    assert not (f["root"] / "o.png").exists()


def test_eval_input_errors(files):
    f = files

    def run_eval(dataset, weights):
        return run_cli("eval", "--config-file", f["config"], "--output", f["root"] / "m.json", "--dataset", dataset,
                       "OUTPUT_DIR", f["root"] / "eval", "MODEL.WEIGHTS", weights)

    assert_user_error(run_eval("synthetic_instance_val_all", f["truncated"]),
                      f"cannot read checkpoint {f['truncated']}", "truncated")
    assert_user_error(run_eval("synthetic_instance_val_al", f["weights"]),
                      "unknown dataset 'synthetic_instance_val_al'", "did you mean 'synthetic_instance_val_all'")
    assert_user_error(run_eval("synthetic_instance_val_all", f["root"] / "nope.pth"), "checkpoint file not found",
                      str(f["root"] / "nope.pth"))
    assert not (f["root"] / "m.json").exists()


def test_config_errors_and_debug_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  MAX_ITER: 3\n  STEPS: [1, 2\nMODEL:\n  WEIGHTS: ''\n")
    assert_user_error(run_cli("config", "--config-file", bad), f"{bad}, line 4", "malformed YAML",
                      "starts at line 3")
    assert_user_error(run_cli("config", "SOLVER.IMS_PER_BATCH", "0"), "SOLVER.IMS_PER_BATCH = 0", "> 0")
    assert_user_error(run_cli("config", "SOLVER.CHECKPOINT_PERIOD", "-5"), "SOLVER.CHECKPOINT_PERIOD = -5")
    assert_user_error(run_cli("config", "--config-file", tmp_path / "absent.yaml"), "config file not found")
    debug = run_cli("--debug", "config", "SOLVER.IMS_PER_BATCH", "0")
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "validate_config" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("masqclip: error: SOLVER.IMS_PER_BATCH")


def test_error_types_are_user_errors():
    from masqclip.data import datasets  # noqa: F401  (registers the names)

    for kind in (ConfigError, UnknownDatasetError, DatasetNotFoundError):
        assert issubclass(kind, UserError)
    with pytest.raises(UnknownDatasetError) as err:
        DatasetCatalog.get("coco_instance_val_novel")
    assert "did you mean 'coco_instance_val_novel17'" in str(err.value)
    with pytest.raises(KeyError):  # still a KeyError for callers that expect one
        DatasetCatalog.get("coco_instance_val_novel")
    with pytest.raises(ConfigError, match="MAX_SIZE_TEST"):
        setup_cfg(None, ["INPUT.MIN_SIZE_TEST", "800", "INPUT.MAX_SIZE_TEST", "100"])
    with pytest.raises(ConfigError, match="OBJECT_MASK_THRESHOLD"):
        setup_cfg(None, ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "1.5"])


def test_results_and_pretrain_input_errors(tmp_path):
    bad = tmp_path / "base-novel" / "main" / "generalized.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"results": {"segm": \n')
    from masqclip.manifest import EvaluationEntry, Manifest, TableSpec

    def manifest(metrics):
        path = tmp_path / f"manifest-{metrics.stem}.json"
        entry = EvaluationEntry("base-novel", "tuning", 2, 0, "masqclip", "generalized", "d", str(metrics))
        Manifest(seeds=[0], evaluations=[entry], tables=[TableSpec("base_novel", "base_novel", "base-novel")]).write(path)
        return path

    tables = ["results", "tables", "--output-dir", tmp_path / "t", "--manifest"]
    assert_user_error(run_cli(*tables, manifest(bad)), str(bad), "line 2", "not valid JSON")
    assert_user_error(run_cli(*tables, manifest(tmp_path / "absent.json")), "metrics file not found")
    assert_user_error(run_cli(*tables, tmp_path / "no-manifest.json"), "pipeline manifest not found")
    (tmp_path / "broken.json").write_text("[1, 2]")
    assert_user_error(run_cli(*tables, tmp_path / "broken.json"), "broken.json", "not a readable pipeline manifest")
    assert_user_error(run_cli("pretrain-clip", "--crops", tmp_path / "none", "--output", tmp_path / "c.pt"),
                      str(tmp_path / "none" / "train.jsonl"), "masqclip prepare synthetic")
