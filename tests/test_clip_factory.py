"""open_clip model creation: names, random / local weights, fast and clear offline failure."""
from __future__ import annotations

import time

import pytest
import torch

from masqclip.config import get_cfg
from masqclip.modeling.clip import (ClipWeightsUnavailable, canonical_model_name, clip_mean_std, create_clip,
                                    create_clip_from_config)
from masqclip.modeling.clip import factory


def test_canonical_model_names():
    assert canonical_model_name("ViT-L/14@336px") == "ViT-L-14-336"
    assert canonical_model_name(["ViT-B/16"]) == "ViT-B-16"
    assert canonical_model_name("ViT-L-14-336") == "ViT-L-14-336"
    assert canonical_model_name(["masqclip-tiny"]) == "masqclip-tiny"
    with pytest.raises(ValueError):
        canonical_model_name(["a", "b"])


def test_tiny_model_is_registered_and_random_without_weights():
    a = create_clip(model_name="masqclip-tiny", pretrained="")
    b = create_clip(model_name="masqclip-tiny", pretrained="")
    assert tuple(a.visual.image_size) == (64, 64) and tuple(a.visual.patch_size) == (8, 8)
    assert not a.training
    assert not torch.equal(a.visual.conv1.weight, b.visual.conv1.weight)
    mean, std = clip_mean_std(a)
    assert len(mean) == 3 and len(std) == 3


def test_local_checkpoint_path_round_trip(tmp_path):
    src = create_clip(model_name="masqclip-tiny", pretrained="")
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": src.state_dict(), "model_name": "masqclip-tiny"}, path)
    cfg = get_cfg()
    cfg.MODEL.MASQ_CLIP.MODEL_NAME = ["masqclip-tiny"]
    cfg.MODEL.MASQ_CLIP.PRETRAINED = str(path)
    loaded = create_clip_from_config(cfg)
    for (name, p), q in zip(src.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    with pytest.raises(FileNotFoundError):
        create_clip(model_name="masqclip-tiny", pretrained=str(tmp_path / "missing.pt"))


def test_unknown_tag_and_architecture():
    with pytest.raises(ValueError, match="known"):
        create_clip(model_name="masqclip-tiny", pretrained="openai")
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        create_clip(model_name="ViT-Q-99", pretrained="")


def _assert_fast_clear_failure(tmp_path):
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailable) as err:
        create_clip(model_name="ViT-L/14@336px", pretrained="openai", cache_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "MODEL.MASQ_CLIP.PRETRAINED" in message and str(tmp_path) in message


def test_offline_failure_is_fast_and_names_the_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_fast_clear_failure(tmp_path)


def test_unreachable_network_detected_by_probe(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if factory._reachable(factory.HF_HOST, factory.PROBE_TIMEOUT_S):
        pytest.skip("this machine can reach huggingface.co: the offline path cannot be exercised for real")
    _assert_fast_clear_failure(tmp_path)


def test_openai_weights_files_get_quick_gelu():
    assert factory._quick_gelu_for_file("ViT-L-14-336", "/w/ViT-L-14-336px.pt")
    assert not factory._quick_gelu_for_file("ViT-L-14-336", "/w/mine.pt")
