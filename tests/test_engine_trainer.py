"""Training loop on a toy model: learning, checkpoints, resume equivalence, NaN stop, progress output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_toys import RaiseAt, ToyModel, run_toy, sigkill_once_written, toy_batches, toy_cfg
from masqclip.checkpoint import load_checkpoint, save_checkpoint
from masqclip.engine.checkpointer import Checkpointer, load_model_weights
from masqclip.engine.defaults import build_trainer, default_setup, run_training
from masqclip.engine.trainer import AMPTrainer, HookBase, SimpleTrainer

TESTS = Path(__file__).resolve().parent


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


def test_training_learns_and_writes_outputs(tmp_path):
    model, final = run_toy(toy_cfg(tmp_path, **{"SOLVER.MAX_ITER": 40, "SOLVER.STEPS": (30,),
                                                "SOLVER.CHECKPOINT_PERIOD": 10}))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, 40, 2))
    for key in ("total_loss", "loss_mse", "loss_l1", "lr", "time", "eta_seconds", "data_time"):
        assert key in rows[0]
    assert rows[-1]["total_loss"] < 0.5 * rows[0]["total_loss"]
    for row in rows:  # total = sum of the loss_* terms; the toy/pred_mean metric is logged, not added
        assert row["total_loss"] == pytest.approx(row["loss_mse"] + row["loss_l1"])
        assert row["toy/pred_mean"] > 50
    assert rows[-1]["eta_seconds"] == 0.0
    assert rows[-1]["lr"] == pytest.approx(0.01 * 0.1)  # after the step at 30
    # keeps the last 2 periodic checkpoints + model_final; last_checkpoint names model_final
    files = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert files == ["model_0000019.pth", "model_0000029.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 39 and {"optimizer", "scheduler", "rng", "model"} <= saved.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(saved["model"][k], v)
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics["metrics"]["iterations"] == 40 and metrics["metrics"]["total_loss"] == final["total_loss"]
    assert (tmp_path / "config.yaml").read_text().count("MAX_ITER: 40") == 1
    # not a terminal: periodic log lines with iter, losses, lr, s/iter, ETA
    log = (tmp_path / "log.txt").read_text()
    assert "iter 2/40" in log and "total_loss" in log and "s/iter" in log and "ETA" in log


def test_resume_after_exception_gives_identical_weights(tmp_path):
    full, _ = run_toy(toy_cfg(tmp_path / "full"))
    cfg = toy_cfg(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        run_toy(cfg, extra_hooks=[RaiseAt(5)])
    assert (tmp_path / "cut" / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert not (tmp_path / "cut" / "model_final.pth").exists()
    resumed, final = run_toy(cfg, resume=True)
    assert final["start_iter"] == 4
    _assert_same_weights(full, resumed)
    # the metric rows the interrupted run wrote after its checkpoint are rewritten, not repeated
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    full_rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in full_rows]
    assert [r["total_loss"] for r in rows] == pytest.approx([r["total_loss"] for r in full_rows])
    # resuming a finished run changes nothing and keeps its final metrics
    before = json.loads((tmp_path / "cut" / "train_metrics.json").read_text())["metrics"]
    again, final = run_toy(cfg, resume=True)
    _assert_same_weights(full, again)
    assert final["start_iter"] == 12 and final["total_loss"] == before["total_loss"]


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    full, _ = run_toy(toy_cfg(tmp_path / "full"))
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(TESTS / "engine_toys.py"), str(out), "0.25"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sigkill_once_written(proc, out / "model_0000003.pth", timeout=60, settle=0.3)
    assert not (out / "model_final.pth").exists(), "the run finished before it was killed"
    resumed, final = run_toy(toy_cfg(out), resume=True)
    assert final["start_iter"] in (4, 8)
    _assert_same_weights(full, resumed)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match=r"iteration 6: .*loss_l1=(nan|inf).*loss_mse=(nan|inf)") as err:
        run_toy(toy_cfg(tmp_path), bad_iters=(6,))
    assert "model_0000003.pth" in str(err.value)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert not (tmp_path / "model_final.pth").exists()
    model = ToyModel()
    missing, unexpected, rest = load_checkpoint(model, str(tmp_path / "model_0000003.pth"))
    assert not missing and not unexpected and rest["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


class _SpareParameter(ToyModel):
    """A toy model with a trained parameter the loss never uses (its gradient stays None)."""

    def __init__(self):
        super().__init__(dropout=0.1)
        self.spare = torch.nn.Parameter(torch.zeros(2))


class _PoisonAt(HookBase):
    """Before iteration ``it``, writes inf into a parameter (a step that diverged silently)."""

    def __init__(self, it: int):
        self.it = it

    def before_step(self) -> None:
        if self.trainer.iter == self.it:
            with torch.no_grad():
                self.trainer.model.spare.fill_(float("inf"))


def test_non_finite_parameter_stops_training_before_any_checkpoint_holds_it(tmp_path):
    cfg = default_setup(toy_cfg(tmp_path))
    model = _SpareParameter()

    def build_loader(start_iter, rank, world_size):
        return toy_batches(seed=cfg.SEED, global_batch=4, start_iter=start_iter)

    with pytest.raises(FloatingPointError, match=r"parameters are not finite at iteration 6: .*loss_mse=.*spare"):
        run_training(cfg, model=model, build_loader=build_loader, extra_hooks=[_PoisonAt(6)], progress_bar=False)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000003.pth"]


def test_checkpointer_refuses_to_save_non_finite_weights(tmp_path):
    model = ToyModel()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"model_0000004.pth .*iteration 4.*head.bias"):
        Checkpointer(model=model, output_dir=str(tmp_path)).save("model_0000004", iteration=4)
    assert not list(tmp_path.iterdir())


def test_amp_trainer_paths_on_cpu(tmp_path):
    cfg = toy_cfg(tmp_path)
    model = ToyModel()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    trainer, scaler = build_trainer(cfg, model=model, data_loader=(), optimizer=opt, device=torch.device("cpu"))
    assert type(trainer) is SimpleTrainer and scaler is None  # AMP is for CUDA only
    for dtype, scaler in ((torch.bfloat16, None), (torch.float16, torch.amp.GradScaler("cpu"))):
        model = ToyModel()
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        trainer = AMPTrainer(model=model, optimizer=opt, dtype=dtype, grad_scaler=scaler, device_type="cpu",
                             data_loader=toy_batches(seed=1, global_batch=8),
                             grad_clipper=lambda ps: torch.nn.utils.clip_grad_norm_(list(ps), 1.0))
        trainer.train(0, 30)
        first = trainer.storage.mean_since("total_loss", 0)
        assert trainer.storage.mean_since("total_loss", 25) < first


def test_model_weights_may_be_partial_but_not_foreign(tmp_path):
    donor = ToyModel()
    partial = {"model": {k: v for k, v in donor.state_dict().items() if k.startswith("backbone.")}}
    torch.save(partial, tmp_path / "partial.pth")
    model = ToyModel()
    missing, unexpected = load_model_weights(model, str(tmp_path / "partial.pth"))
    assert missing and not unexpected and all(not k.startswith("backbone.") for k in missing)
    assert torch.equal(model.backbone[0].weight, donor.backbone[0].weight)
    save_checkpoint(tmp_path / "foreign.pth", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="none of this model's parameters"):
        load_model_weights(ToyModel(), str(tmp_path / "foreign.pth"))


def test_progress_bar_on_a_terminal_and_time_based_rows(tmp_path, capsys):
    run_toy(toy_cfg(tmp_path / "bar"), progress_bar=True)
    err = capsys.readouterr().err
    assert "12/12" in err and "loss=" in err
    assert "iter 2/12" not in (tmp_path / "bar" / "log.txt").read_text()  # the bar replaces log lines
    # rows every LOG_SECONDS even when LOG_PERIOD is far away (SLURM logs of slow jobs)
    run_toy(toy_cfg(tmp_path / "sec", **{"SOLVER.LOG_PERIOD": 1000, "SOLVER.LOG_SECONDS": 0.0}))
    rows = (tmp_path / "sec" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 12
