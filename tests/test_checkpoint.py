"""Checkpoint loading/saving: formats, reports, refusals, torchvision and model-zoo conversion."""
from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from masqclip.checkpoint import group_keys, load_checkpoint, read_checkpoint, save_checkpoint
from masqclip.config import get_cfg
from masqclip.modeling.backbone import build_backbone


class _Net(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.a = nn.Linear(2, width)
        self.b = nn.Sequential(nn.Linear(width, 1), nn.Linear(1, 1))


class _WithBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = get_cfg()
        cfg.MODEL.RESNETS.DEPTH = 18
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        self.backbone = build_backbone(cfg)
        self.head = nn.Linear(4, 4)


def test_save_is_atomic_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    path = save_checkpoint(tmp_path / "sub" / "model.pth", net, iteration=7, optimizer={"lr": 0.1})
    assert sorted(os.listdir(path.parent)) == ["model.pth"]  # no temporary file left behind
    other = _Net()
    missing, unexpected, rest = load_checkpoint(other, path)
    assert (missing, unexpected) == ([], [])
    assert rest == {"iteration": 7, "optimizer": {"lr": 0.1}}
    for key, value in net.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value)


def test_failed_save_keeps_the_old_file(tmp_path):
    path = save_checkpoint(tmp_path / "model.pth", _Net(), iteration=1)
    with pytest.raises(Exception):
        save_checkpoint(path, _Net(), iteration=2, bad=lambda: None)  # a lambda cannot be pickled
    assert torch.load(path, weights_only=True)["iteration"] == 1
    assert sorted(os.listdir(tmp_path)) == ["model.pth"]


def test_bare_state_dict_and_missing_unexpected_report(tmp_path, caplog):
    state = _Net().state_dict()
    state.pop("b.1.weight")
    state["extra.0.weight"] = torch.zeros(1)
    state["extra.1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bare.pth")
    with caplog.at_level(logging.WARNING, logger="masqclip.checkpoint"):
        missing, unexpected, rest = load_checkpoint(_Net(), tmp_path / "bare.pth")
    assert missing == ["b.1.weight"]
    assert sorted(unexpected) == ["extra.0.weight", "extra.1.weight"]
    assert rest == {}
    assert "b.1.weight" in caplog.text and "extra.{0,1}.weight" in caplog.text


def test_shape_mismatch_is_refused_naming_key_and_shapes(tmp_path):
    save_checkpoint(tmp_path / "wide.pth", _Net(width=5))
    with pytest.raises(ValueError) as err:
        load_checkpoint(_Net(width=3), tmp_path / "wide.pth")
    text = str(err.value)
    assert "a.weight: checkpoint (5, 2) vs model (3, 2)" in text
    assert "b.0.weight: checkpoint (1, 5) vs model (1, 3)" in text
    missing, _, _ = load_checkpoint(_Net(width=3), tmp_path / "wide.pth", strict_shapes=False)
    assert sorted(missing) == ["a.bias", "a.weight", "b.0.weight"]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.pth")):
        load_checkpoint(_Net(), tmp_path / "nope.pth")


def test_d2_model_zoo_pkl_backbone_only(tmp_path):
    torch.manual_seed(0)
    source = _WithBackbone()
    blobs = {k[len("backbone."):]: v.numpy().copy() for k, v in source.state_dict().items()
             if k.startswith("backbone.")}
    # a Caffe2-style export: frozen BN folded into weight/bias, no running statistics
    blobs.pop("stem.conv1.norm.running_mean")
    blobs.pop("stem.conv1.norm.running_var")
    with open(tmp_path / "R-18.pkl", "wb") as f:
        pickle.dump({"model": blobs, "__author__": "test", "matching_heuristics": True}, f)
    target = _WithBackbone()
    missing, unexpected, rest = load_checkpoint(target, tmp_path / "R-18.pkl")
    assert missing == ["head.weight", "head.bias"] and unexpected == []
    assert rest == {"__author__": "test", "matching_heuristics": True}
    loaded = target.state_dict()
    torch.testing.assert_close(loaded["backbone.res3.0.conv1.weight"], source.state_dict()["backbone.res3.0.conv1.weight"])
    assert torch.equal(loaded["backbone.stem.conv1.norm.running_mean"], torch.zeros(64))
    assert torch.equal(loaded["backbone.stem.conv1.norm.running_var"], torch.ones(64))
    assert isinstance(blobs["stem.conv1.weight"], np.ndarray)


def test_torchvision_scheme_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        read_checkpoint("torchvision://resnet18")
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in str(err.value)
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    expected.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), expected)
    target = _WithBackbone()
    missing, unexpected, _ = load_checkpoint(target, "torchvision://resnet18")
    assert missing == ["head.weight", "head.bias"] and unexpected == []
    torch.testing.assert_close(target.state_dict()["backbone.res4.1.conv2.norm.running_var"],
                               tv.state_dict()["layer3.1.bn2.running_var"])
    torch.testing.assert_close(target.state_dict()["backbone.res3.0.shortcut.weight"],
                               tv.state_dict()["layer2.0.downsample.0.weight"])


def test_group_keys():
    assert group_keys(["l.0.w", "l.0.b", "l.1.w", "l.1.b", "x"]) == ["l.{0,1}.{b,w}", "x"]
