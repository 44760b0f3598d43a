"""A real ``masqclip train`` process (synthetic world, tiny model, the real data loader): killed with
SIGKILL and resumed, it ends with exactly the weights of an uninterrupted run; a diverging run stops
at the first non-finite step and never saves non-finite weights."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from engine_toys import sigkill_once_written
from test_cli_train_eval import TINY
from workflow_support import base_env

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **solver) -> Path:
    cfg = copy.deepcopy(TINY)
    cfg["DATASETS"]["TEST"] = []
    cfg["SOLVER"].update(solver)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(world: Path, tmp_path: Path) -> dict:
    env = base_env()
    env.update(DETECTRON2_DATASETS=str(world), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
               OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _train(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "masqclip.cli", "train", "--config-file", str(config), *extra,
            "OUTPUT_DIR", str(out)]


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.slow
def test_sigkill_then_resume_of_a_real_training_gives_identical_weights(tiny_world, tmp_path):
    config = _config(tmp_path, MAX_ITER=6, CHECKPOINT_PERIOD=2, STEPS=[3])
    env = _env(tiny_world, tmp_path)
    full = subprocess.run(_train(config, tmp_path / "full"), env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_train(config, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sigkill_once_written(proc, out / "model_0000001.pth", timeout=120)
    assert not (out / "model_final.pth").exists(), "the run finished before it was killed"

    resumed = subprocess.run(_train(config, out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (out / "log.txt").read_text()
    a, b = _weights(tmp_path / "full" / "model_final.pth"), _weights(out / "model_final.pth")
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(6))


def test_huge_finite_weights_stop_with_the_iteration_not_in_scipy(tiny_world, tmp_path):
    # lr 1e6: the weights stay finite (~1e6) after the first step; the next forward pass is not.
    config = _config(tmp_path, MAX_ITER=4, CHECKPOINT_PERIOD=1, BASE_LR=1e6, WARMUP_ITERS=0, STEPS=[])
    out = tmp_path / "diverged"
    proc = subprocess.run(_train(config, out), env=_env(tiny_world, tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "FloatingPointError" in proc.stderr and "iteration 1" in proc.stderr, proc.stderr[-3000:]
    assert "loss_ce=" in proc.stderr and "invalid numeric entries" not in proc.stderr
    for path in out.glob("*.pth"):
        assert all(torch.isfinite(v).all() for v in _weights(path).values() if v.is_floating_point()), path
