"""Contrastive pre-training of the tiny CLIP: schedule, loss, learning on generated crops, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from masqclip.cli import main as cli_main
from masqclip.modeling.clip import create_clip
from masqclip.modeling.clip.pretrain import PretrainConfig, contrastive_loss, load_crops, lr_at, pretrain_clip

# (name, RGB, texture period in px or 0 = plain): easy appearance-only categories
CATEGORIES = (("red plain disc", (220, 30, 30), 0), ("green striped box", (30, 200, 40), 4),
              ("blue dotted star", (40, 60, 220), 3), ("sand", (200, 180, 120), 0))


def _write_crops(root, per_category: dict[str, int], size: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, count in per_category.items():
        lines = []
        for cid, (name, rgb, period) in enumerate(CATEGORIES):
            for i in range(count):
                background = rng.integers(0, 80, 3)
                image = np.broadcast_to(background, (size, size, 3)).copy()
                r = rng.integers(14, 26)
                cy, cx = rng.integers(r, size - r, 2)
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                if period:
                    inside &= ((xx + yy) // period) % 2 == 0
                image[inside] = np.clip(np.array(rgb) + rng.integers(-20, 20, 3), 0, 255)
                rel = f"{split}/{cid}/{i:03d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.astype(np.uint8)).save(root / rel)
                lines.append(json.dumps({"file": rel, "category": name, "caption": f"a photo of a {name}."}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_lr_schedule_warmup_then_cosine():
    cfg = PretrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 0.0, cfg) == 0.1 and lr_at(9, 0.0, cfg) == 1.0
    assert math.isclose(lr_at(10, 0.0, cfg), 1.0)
    assert math.isclose(lr_at(50, 0.5, cfg), 0.55)
    assert math.isclose(lr_at(99, 1.0, cfg), 0.1) and math.isclose(lr_at(99, 3.0, cfg), 0.1)


def test_contrastive_loss_counts_same_category_pairs_as_positives():
    feats = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    labels = torch.tensor([0, 0, 1, 2])
    logit_scale = torch.tensor(math.log(10.0))
    logits = 10.0 * feats @ feats.t()
    target = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    expected = 0.5 * ((-target * logits.log_softmax(1)).sum(1).mean() + (-target * logits.t().log_softmax(1)).sum(1).mean())
    torch.testing.assert_close(contrastive_loss(feats, feats, labels, logit_scale), expected)
    distinct = torch.arange(4)
    torch.testing.assert_close(contrastive_loss(feats, feats, distinct, logit_scale),
                               torch.nn.functional.cross_entropy(logits, distinct))


def test_crop_loading_keeps_training_category_order(tmp_path):
    _write_crops(tmp_path, {"train": 2, "val": 1})
    train = load_crops(tmp_path, "train")
    val = load_crops(tmp_path, "val", categories=train.categories)
    assert train.images.shape == (8, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.categories == [c[0] for c in CATEGORIES] and val.labels.tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_cli_trains_learns_and_writes_loadable_checkpoint(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _write_crops(tmp_path / "crops", {"train": 16, "val": 8})
    out = tmp_path / "models" / "tiny.pt"
    rc = cli_main(["pretrain-clip", "--crops", str(tmp_path / "crops"), "--output", str(out), "--epochs", "6",
                   "--batch-size", "16", "--warmup-steps", "5", "--lr", "3e-3", "--seed", "0", "--threads", "2",
                   "--device", "cpu"])
    assert rc == 0
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["steps"] == 6 * (4 * 16 // 16) and metrics["num_val_crops"] == 32
    assert set(metrics["zero_shot_per_category"]) == {c[0] for c in CATEGORIES}
    assert metrics["zero_shot_top1"] >= 75.0, metrics  # chance is 25%
    model = create_clip(model_name=["masqclip-tiny"], pretrained=str(out))
    saved = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    # Tracked like any stage: one run tagged stage=clip with its seed and the zero-shot accuracy.
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["masqclip"], filter_string="tags.stage = 'clip'")
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1 and runs["tags.seed"][0] == "0" and runs["tags.mlflow.runName"][0] == "clip / seed 0"
    assert runs["metrics.zero_shot_top1"][0] == metrics["zero_shot_top1"]


def test_compact_path_learns_the_same_weights_as_the_full_vocabulary_path(tmp_path):
    """Training only the token-embedding rows the captions use changes nothing but the cost: same
    crops, order, flips and seeds give the same weights (the full table written back) and accuracy."""
    _write_crops(tmp_path, {"train": 12, "val": 3})
    cfg = PretrainConfig(epochs=2, batch_size=16, warmup_steps=2, lr=3e-3, seed=3)
    runs = {compact: pretrain_clip(tmp_path, cfg, compact=compact, log=lambda *_: None) for compact in (False, True)}
    (plain, plain_metrics), (fast, fast_metrics) = runs[False], runs[True]
    assert plain_metrics["steps"] == fast_metrics["steps"] == 2 * (48 // 16)
    assert isinstance(fast.token_embedding, torch.nn.Embedding) and fast.token_embedding.num_embeddings == 49408
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert plain_state.keys() == fast_state.keys()
    for key, value in plain_state.items():
        torch.testing.assert_close(fast_state[key], value, rtol=1e-5, atol=1e-6, msg=key)
    torch.manual_seed(cfg.seed)  # the initial weights both runs started from
    initial = create_clip(model_name="masqclip-tiny", pretrained="").state_dict()["token_embedding.weight"]
    moved = (plain_state["token_embedding.weight"] != initial).any(dim=1)
    assert 0 < int(moved.sum()) < 100  # the used rows trained, the rest of the vocabulary untouched
    assert fast_metrics["zero_shot_top1"] == plain_metrics["zero_shot_top1"]
    assert math.isclose(fast_metrics["final_loss"], plain_metrics["final_loss"], rel_tol=1e-5)
