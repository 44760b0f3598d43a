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


def _plain_file(path):
    torch.save({"state_dict": {}}, path)
    return str(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / save, to craft the archive
def test_openai_weights_under_a_plain_gelu_architecture_are_refused(tmp_path):
    from masqclip.config import ConfigError

    (tmp_path / "x").mkdir()
    jit = tmp_path / "x" / "my-clip.pt"  # a TorchScript archive: OpenAI's release format, any name
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(jit))
    hf = tmp_path / "models--timm--vit_large_patch14_clip_336.openai" / "snapshots" / "abc"
    hf.mkdir(parents=True)
    files = {"open_clip's download name": _plain_file(tmp_path / "x" / "ViT-L-14-336px.pt"),
             "Hugging Face cache": _plain_file(hf / "open_clip_model.bin"),
             "TorchScript archive": str(jit)}
    for evidence, path in files.items():
        for name in ("ViT-L-14-336", "ViT-L/14@336px"):  # also the official configs' spelling
            start = time.monotonic()
            with pytest.raises(ConfigError) as err:  # before any model is built
                create_clip(model_name=name, pretrained=path)
            assert time.monotonic() - start < 5
            message = str(err.value)
            assert evidence in message and "'ViT-L-14-336-quickgelu'" in message and path in message, message
        factory.check_activation_for_weights("ViT-L-14-336-quickgelu", path)  # QuickGELU named: accepted
    # nothing marks a plain state dict under another name as OpenAI's
    assert factory.openai_weights_evidence("ViT-L-14-336", _plain_file(tmp_path / "x" / "mine.pt")) is None


def test_openai_weights_recognised_by_the_sha256_of_the_download(tmp_path, monkeypatch):
    # OpenAI's download URLs carry the file's SHA-256; a renamed copy is recognised by content.
    import hashlib

    import open_clip

    path = _plain_file(tmp_path / "renamed.pt")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    real = open_clip.get_pretrained_cfg

    def with_our_digest(arch, tag):  # the same tag, its URL's digest replaced by our file's
        pcfg = dict(real(arch, tag))
        pcfg["url"] = factory._SHA256_IN_URL.sub(f"/{digest}/", pcfg.get("url", ""))
        return pcfg

    assert factory.openai_weights_evidence("ViT-L-14-336", path) is None
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", with_our_digest)
    assert "SHA-256" in factory.openai_weights_evidence("ViT-L-14-336", path)
    with pytest.raises(factory.ClipActivationMismatch, match="SHA-256"):
        create_clip(model_name="ViT-L-14-336", pretrained=path)


def test_paper_configs_name_a_quickgelu_architecture():
    import open_clip

    from pathlib import Path

    from masqclip.config import setup_cfg

    repo = Path(__file__).resolve().parents[1]
    names = {canonical_model_name(get_cfg().MODEL.MASQ_CLIP.MODEL_NAME)}
    for path in sorted((repo / "config/models").glob("*/**/masqclip*.yaml")) + sorted(
            (repo / "config/models/cross-dataset/test").glob("*.yaml")):
        if "synthetic" not in path.parts:
            names.add(canonical_model_name(setup_cfg(str(path), []).MODEL.MASQ_CLIP.MODEL_NAME))
    assert names == {"ViT-L-14-336-quickgelu"}
    assert open_clip.get_model_config("ViT-L-14-336-quickgelu")["quick_gelu"] is True
    assert open_clip.list_pretrained_tags_by_model("ViT-L-14-336-quickgelu") == ["openai"]
