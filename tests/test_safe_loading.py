"""Loading never runs code from a file, and a checkpoint the model cannot use is refused.

Every artefact here is real: a ``.pth`` and detectron2-style ``.pkl`` whose pickles call
``os.system`` (the fixtures first prove that plain unpickling runs them), truncated files, and
checkpoints holding a few of a model's tensors. The commands run as real processes.
"""
from __future__ import annotations

import collections
import logging
import os
import pickle
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from masqclip.checkpoint import CheckpointError, UnreadableCheckpointError, load_checkpoint, save_checkpoint
from masqclip.engine.checkpointer import Checkpointer, load_model_weights
from masqclip.errors import UserError
from masqclip.utils import safe_pickle

from engine_toys import RaiseAt, ToyModel, run_toy, toy_cfg
from test_cli_train_eval import TINY


class _RunsShell:
    """Pickles as a call of ``os.system("touch MARKER")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _proves_payload_runs(marker, load) -> None:
    """The crafted file really runs its command when unpickled without restrictions."""
    load()
    assert os.path.exists(marker), "the crafted pickle did not run its payload"
    os.remove(marker)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "payload_ran"


@pytest.fixture
def evil_pth(tmp_path, marker):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(1)}, "note": _RunsShell(marker)}, path)
    _proves_payload_runs(marker, lambda: torch.load(path, weights_only=False))
    return path


@pytest.fixture
def evil_pkl(tmp_path, marker):
    path = tmp_path / "R-18-evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": {"stem.conv1.weight": np.zeros((2, 3), np.float32)}, "__author__": _RunsShell(marker)},
                    fh, protocol=2)
    _proves_payload_runs(marker, lambda: pickle.load(open(path, "rb"), encoding="latin1"))
    return path


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "TRACKING": {"ENABLED": False}}))
    return path


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """``masqclip ARGS`` as a real process of this checkout."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "masqclip.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, and exactly one ``masqclip: error:`` line (the last) holding every fragment."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("masqclip: error:")]
    assert len(errors) == 1 and proc.stderr.rstrip("\n").endswith(errors[0]), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def test_crafted_pth_never_runs_through_eval_train_or_predict(tmp_path, evil_pth, marker, tiny_config):
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(image)
    commands = {
        "eval": ["eval", "--config-file", tiny_config, "--dataset", "synthetic_instance_val_all",
                 "OUTPUT_DIR", tmp_path / "eval", "MODEL.WEIGHTS", evil_pth],
        "train": ["train", "--config-file", tiny_config, "OUTPUT_DIR", tmp_path / "train", "MODEL.WEIGHTS", evil_pth],
        "predict": ["predict", "--config-file", tiny_config, "--weights", evil_pth, "--image", image,
                    "--output", tmp_path / "out.png"],
    }
    for name, args in commands.items():
        line = assert_user_error(run_cli(*args, cwd=tmp_path), f"refusing to load {evil_pth}", "system")
        assert "would import" in line, (name, line)
        assert not marker.exists(), f"{name} ran the payload"
    assert not (tmp_path / "out.png").exists()


def test_crafted_pkl_never_runs_through_the_converter_or_model_weights(tmp_path, evil_pkl, marker, tiny_config):
    with pytest.raises(UnreadableCheckpointError, match=r"refusing to load .*R-18-evil\.pkl: it would import .*system"):
        load_checkpoint(ToyModel(), evil_pkl)
    assert not marker.exists()
    assert_user_error(run_cli("train", "--config-file", tiny_config, "OUTPUT_DIR", tmp_path / "train",
                              "MODEL.WEIGHTS", evil_pkl, cwd=tmp_path), f"refusing to load {evil_pkl}")
    assert not marker.exists()


def test_crafted_ade20k_index_is_refused(tmp_path, marker):
    from fixtures_raw import make_ade20k_full

    from masqclip.cli import main as cli

    make_ade20k_full(tmp_path)
    index = tmp_path / "ADE20K_2021_17_01/index_ade20k.pkl"
    with open(index, "rb") as fh:
        data = pickle.load(fh)
    data["objectnames"] = _RunsShell(marker)
    with open(index, "wb") as fh:
        pickle.dump(data, fh)
    assert cli(["prepare", "ade20k-847", "--root", str(tmp_path)]) == 2
    assert not marker.exists()


def test_restricted_unpickler_reads_plain_data_and_numpy(tmp_path):
    data = {"model": collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3),
                                             i=np.array([1, 2], np.int64)),
            "names": np.array(["wall", "cat"]), "objects": np.array([1, "x", None], dtype=object),
            "scalar": np.float64(2.5), "dtype": np.dtype("<u2"), "raw": b"\x00\xff", "set": {1, 2},
            "nested": [(1, 2.0, "three", None, True)]}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=protocol)
        back = safe_pickle.load(path, encoding="latin1")
        assert back.keys() == data.keys()
        for key in ("w", "i"):
            np.testing.assert_array_equal(back["model"][key], data["model"][key])
            assert back["model"][key].dtype == data["model"][key].dtype
        assert list(back["names"]) == ["wall", "cat"] and list(back["objects"]) == [1, "x", None]
        assert back["scalar"] == 2.5 and back["dtype"] == np.dtype("<u2") and back["raw"] == b"\x00\xff"
        assert back["set"] == {1, 2} and back["nested"] == data["nested"]
    # what a legit model-zoo file holds loads as tensors through the converter
    with open(tmp_path / "zoo.pkl", "wb") as fh:
        pickle.dump({"model": {"stem.conv1.weight": np.ones((2, 2), np.float32)}, "__author__": "zoo"}, fh, protocol=2)
    state = load_checkpoint(torch.nn.Module(), tmp_path / "zoo.pkl", strict_shapes=False)
    assert state[1] == ["backbone.stem.conv1.weight"]  # unexpected for an empty module, but read
    # numpy arrays in a .pth (torch.load(weights_only=True) with numpy allowed) load as tensors
    torch.save({"model": {"weight": np.full((2, 2), 3.0, np.float32)}, "seen": np.int64(5)}, tmp_path / "np.pth")
    net = torch.nn.Linear(2, 2, bias=False)
    missing, _, rest = load_checkpoint(net, tmp_path / "np.pth")
    assert missing == [] and rest["seen"] == 5 and torch.equal(net.weight, torch.full((2, 2), 3.0))
    # any other global is refused before import; a codec other than latin1 too
    for name, payload in (("eval", b"cbuiltins\neval\n(Vprint(1)\ntR."),
                          ("getattr", b"cbuiltins\ngetattr\n(Vx\nVy\ntR."),
                          ("zlib codec", b"c_codecs\nencode\n(Vx\nVzlib_codec\ntR.")):
        path = tmp_path / "bad.pkl"
        path.write_bytes(payload)
        with pytest.raises(UserError, match=str(path)):
            safe_pickle.load(path)
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4)[:50])
    with pytest.raises(UserError, match=r"cut\.pkl.*truncated"):
        safe_pickle.load(path)


def test_strict_loads_refuse_a_checkpoint_lacking_tensors_or_with_wrong_shapes(tmp_path, tiny_config):
    from masqclip.config import setup_cfg
    from masqclip.modeling import build_model

    cfg = setup_cfg(str(tiny_config))
    state = build_model(cfg).state_dict()
    few = dict(list(state.items())[:6])
    torch.save({"model": few}, tmp_path / "few.pth")
    metrics = tmp_path / "m.json"
    line = assert_user_error(run_cli("eval", "--config-file", tiny_config, "--dataset", "synthetic_instance_val_all",
                                     "--output", metrics, "OUTPUT_DIR", tmp_path / "eval",
                                     "MODEL.WEIGHTS", tmp_path / "few.pth", cwd=tmp_path),
                             f"{tmp_path / 'few.pth'} lacks {len(state) - 6 - 1} of the {len(state) - 1} tensors",
                             "backbone.res")
    assert "more)" in line  # abbreviated: one line however many are missing
    assert not metrics.exists()
    # in process: the same refusal, and a complete checkpoint with a wrong shape is refused too
    model = build_model(cfg)
    with pytest.raises(CheckpointError, match="lacks"):
        load_model_weights(model, str(tmp_path / "few.pth"), strict=True)
    wrong = dict(state)
    key = "sem_seg_head.predictor.query_feat.weight"
    wrong[key] = torch.zeros(wrong[key].shape[0] + 1, wrong[key].shape[1])
    torch.save({"model": wrong}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=rf"1 shape mismatch\(es\): {key}: checkpoint"):
        load_model_weights(model, str(tmp_path / "wrong.pth"), strict=True)
    # the loss-only buffer may differ (a MasQ-Tuning vocabulary sizes it): accepted
    del state["criterion.empty_weight"]
    torch.save({"model": state}, tmp_path / "no_loss_buffer.pth")
    missing, _ = load_model_weights(model, str(tmp_path / "no_loss_buffer.pth"), strict=True)
    assert missing == ["criterion.empty_weight"]


def test_partial_loads_say_what_they_load(tmp_path, caplog):
    donor = ToyModel()
    torch.save({"model": {k: v for k, v in donor.state_dict().items() if k.startswith("backbone.")}},
               tmp_path / "backbone.pth")
    package_logger = logging.getLogger("masqclip")  # does not propagate once set up: listen on it directly
    package_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="masqclip"):
            Checkpointer(model=ToyModel(), output_dir=str(tmp_path / "out")).resume_or_load(
                str(tmp_path / "backbone.pth"), resume=False)
    finally:
        package_logger.removeHandler(caplog.handler)
    line = next(r.getMessage() for r in caplog.records if "tensors from" in r.getMessage())
    assert "loaded 4 of 8 tensors" in line and "backbone (4)" in line
    assert "left as initialised: head (2), level_embed (1), query_embed (1)" in line


def test_masq_tuning_refuses_an_incomplete_mask_generator(tmp_path):
    from test_masq_tuning import tiny_cfg

    from masqclip.modeling import build_model

    model = build_model(tiny_cfg())
    generator = {k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "sem_seg_head."))}
    torch.save({"model": dict(list(generator.items())[:-3])}, tmp_path / "cut_generator.pth")
    checkpointer = Checkpointer(model=model, output_dir=str(tmp_path / "out"))
    with pytest.raises(CheckpointError, match="lacks 3 of the"):
        checkpointer.resume_or_load(str(tmp_path / "cut_generator.pth"), resume=False)
    torch.save({"model": generator}, tmp_path / "generator.pth")
    missing, _ = load_model_weights(model, str(tmp_path / "generator.pth"), strict=True)
    assert missing and all(k.startswith(("masqclip.", "criterion.")) for k in missing)  # CLIP kept as built


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    full, _ = run_toy(toy_cfg(tmp_path / "full"))
    cfg = toy_cfg(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        run_toy(cfg, extra_hooks=[RaiseAt(9)])
    newest = tmp_path / "cut" / "model_0000007.pth"
    assert (tmp_path / "cut" / "last_checkpoint").read_text().strip() == newest.name
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    resumed, final = run_toy(cfg, resume=True)
    log = (tmp_path / "cut" / "log.txt").read_text().splitlines()
    warnings = [line for line in log if " WARNING] " in line]
    assert len(warnings) == 1 and str(newest) in warnings[0] and "truncated" in warnings[0], warnings
    assert final["start_iter"] == 4  # from model_0000003.pth
    for key, value in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    # nothing readable left: stop, naming the folder, rather than start over
    for path in (tmp_path / "cut").glob("*.pth"):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"none of the 3 checkpoint\(s\) in {tmp_path / 'cut'} can be read"):
        run_toy(cfg, resume=True)


def test_truncated_checkpoint_given_by_name_is_one_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "model.pth", ToyModel())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UnreadableCheckpointError, match=rf"cannot read checkpoint {path}: truncated"):
        load_model_weights(ToyModel(), str(path))


def test_crafted_clip_weights_are_refused(tmp_path, marker):
    from masqclip.modeling.clip.factory import create_clip

    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {"logit_scale": torch.zeros(())}, "note": _RunsShell(marker)}, path)
    _proves_payload_runs(marker, lambda: torch.load(path, weights_only=False))
    with pytest.raises(UnreadableCheckpointError, match=rf"refusing to load {path}: it would import .*system"):
        create_clip(model_name="masqclip-tiny", pretrained=str(path))
    assert not marker.exists()
