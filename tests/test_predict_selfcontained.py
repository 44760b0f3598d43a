"""Predictions that stand alone: a trained checkpoint carries its config (``predict --weights`` alone
works), and a MasQ-Tuning checkpoint whose CLIP text tower cannot be rebuilt as it was tuned (no
weights, a missing file, another file) is refused with one line naming what is missing."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from masqclip.checkpoint import save_checkpoint
from masqclip.checkpoint.provenance import checkpoint_metadata, read_metadata
from masqclip.cli import main as cli
from masqclip.config import setup_cfg
from masqclip.modeling import build_model
from masqclip.modeling.clip.factory import create_clip

from test_cli_train_eval import TINY

VOCAB = ["red thing", "blue thing"]


def _clip_file(path, seed):
    torch.manual_seed(seed)
    torch.save(create_clip(model_name="masqclip-tiny", pretrained="").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A MasQ-Tuning checkpoint written as training writes it (config and CLIP identity inside),
    alone in its folder, and the CLIP weights file it was tuned with."""
    root = tmp_path_factory.mktemp("tuned")
    (root / "clip").mkdir()
    clip = _clip_file(root / "clip" / "tiny.pt", seed=0)
    spec = copy.deepcopy(TINY)
    spec["MODEL"].update(META_ARCHITECTURE="MasQTuning",
                         MASQ_CLIP={"MODEL_NAME": ["masqclip-tiny"], "PRETRAINED": str(clip),
                                    "TRAIN_MASK_SIZE": 64, "VOCABULARY": VOCAB})
    spec["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"] = len(VOCAB)
    config = root / "tuning.yaml"
    config.write_text(yaml.safe_dump(spec))
    cfg = setup_cfg(str(config))
    torch.manual_seed(1)
    model = build_model(cfg)
    weights = root / "model" / "model_final.pth"
    save_checkpoint(weights, model, iteration=2, **checkpoint_metadata(cfg))
    image = root / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    return {"root": root, "clip": clip, "config": config, "weights": weights, "image": image, "cfg": cfg}


def _predict(tuned, tmp_path, *extra, weights=None):
    out = tmp_path / "seg.png"
    code = cli(["predict", "--weights", str(weights or tuned["weights"]), "--image", str(tuned["image"]),
                "--output", str(out), "--min-score", "0", *extra])
    return code, out


def test_checkpoint_carries_its_config_and_clip_identity(tuned):
    meta = read_metadata(tuned["weights"])  # weights_only loading
    assert yaml.safe_load(meta["cfg"])["MODEL"]["MASQ_CLIP"]["PRETRAINED"] == str(tuned["clip"])
    record = meta["clip_weights"]
    assert record["pretrained"] == str(tuned["clip"]) and record["size"] == tuned["clip"].stat().st_size
    import hashlib

    assert record["sha256"] == hashlib.sha256(tuned["clip"].read_bytes()).hexdigest()


def test_predict_works_from_the_checkpoint_alone(tuned, tmp_path):
    assert not (tuned["weights"].parent / "config.yaml").exists()
    code, out = _predict(tuned, tmp_path)
    assert code == 0
    pred = json.loads(out.with_suffix(".json").read_text())
    assert pred["classes"] == VOCAB and pred["segments"]  # the trained vocabulary, from the saved config


def test_config_yaml_beside_an_older_checkpoint_is_used(tuned, tmp_path):
    old = tmp_path / "old" / "model_final.pth"
    state = torch.load(tuned["weights"], weights_only=True)
    old.parent.mkdir()
    torch.save({"model": state["model"], "iteration": 2}, old)  # as written before: no config inside
    assert read_metadata(old)["cfg"] is None
    code, _ = _predict(tuned, tmp_path, weights=old)
    assert code == 2  # nothing to go by
    (old.parent / "config.yaml").write_text(tuned["cfg"].dump())
    code, out = _predict(tuned, tmp_path, weights=old)
    assert code == 0 and json.loads(out.with_suffix(".json").read_text())["classes"] == VOCAB


def test_predict_refuses_a_text_encoder_it_cannot_rebuild(tuned, tmp_path, capsys):
    # The README's old way: a model YAML without the CLIP weights -> a random text encoder. Refused.
    code, out = _predict(tuned, tmp_path, "--config-file", str(tuned["config"]), "MODEL.MASQ_CLIP.PRETRAINED", "''")
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and "randomly initialised" in err and str(tuned["clip"]) in err
    # Another CLIP file (same architecture, other weights): refused, naming the expected one.
    other = _clip_file(tmp_path / "other.pt", seed=5)
    code, _ = _predict(tuned, tmp_path, "MODEL.MASQ_CLIP.PRETRAINED", str(other))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not the CLIP the model was tuned with" in err and str(tuned["clip"]) in err
    # The CLIP file the checkpoint names has gone.
    moved = tuned["clip"].rename(tmp_path / "moved.pt")
    try:
        code, _ = _predict(tuned, tmp_path)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "missing" in err and str(tuned["clip"]) in err
        # ... and the same weights elsewhere are accepted (identified by content).
        code, _ = _predict(tuned, tmp_path, "MODEL.MASQ_CLIP.PRETRAINED", str(moved))
        assert code == 0
    finally:
        moved.rename(tuned["clip"])
