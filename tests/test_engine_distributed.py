"""Data parallelism: a 2-process gloo run equals one process over the same global batch; env detection."""
from __future__ import annotations

import pytest
import torch

from engine_toys import ToyModel, toy_batches, toy_cfg
from masqclip.engine.defaults import default_setup, run_training
from masqclip.cluster import first_slurm_host
from masqclip.engine.launch import detect_env, init_distributed, launch
from masqclip.engine.trainer import HookBase


class GradRecorder(HookBase):
    """Saves the (all-reduced) gradients of the first step."""

    def __init__(self, path):
        self.path = path

    def after_step(self) -> None:
        if self.trainer.iter == 0:
            model = self.trainer.model
            model = getattr(model, "module", model)
            torch.save({k: p.grad.clone() for k, p in model.named_parameters()}, self.path)


def _train(output_dir, grads_path, world_size_expected):
    torch.set_num_threads(1)
    env = detect_env()
    assert env.world_size == world_size_expected
    init_distributed(env, torch.device("cpu"))
    cfg = default_setup(toy_cfg(output_dir, **{"SOLVER.MAX_ITER": 6, "SOLVER.IMS_PER_BATCH": 8}))
    torch.manual_seed(0)
    model = ToyModel(dropout=0.0)

    def loader(start_iter, rank, world_size):
        return toy_batches(seed=cfg.SEED, global_batch=8, start_iter=start_iter, rank=rank, world_size=world_size)

    run_training(cfg, model=model, build_loader=loader, progress_bar=False,
                 extra_hooks=[GradRecorder(f"{grads_path}.rank{env.rank}")])


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    launch(_train, 2, (str(tmp_path / "ddp"), str(tmp_path / "ddp_grads"), 2))
    threads = torch.get_num_threads()
    try:
        _train(str(tmp_path / "single"), str(tmp_path / "single_grads"), 1)
    finally:
        torch.set_num_threads(threads)
    single = torch.load(tmp_path / "single" / "model_final.pth", weights_only=False)["model"]
    ddp = torch.load(tmp_path / "ddp" / "model_final.pth", weights_only=False)["model"]
    g1 = torch.load(f"{tmp_path / 'single_grads'}.rank0")
    for rank in (0, 1):
        g2 = torch.load(f"{tmp_path / 'ddp_grads'}.rank{rank}")
        for k in g1:
            assert torch.allclose(g1[k], g2[k], atol=1e-6, rtol=1e-5), f"grad {k} differs on rank {rank}"
    moved = 0
    init = ToyModel(dropout=0.0).state_dict()
    for k in single:
        assert torch.allclose(single[k], ddp[k], atol=1e-6, rtol=1e-5), f"weight {k} differs"
        moved += not torch.equal(single[k], init[k])
    assert moved  # training changed the weights
    # each rank saw half the global batch: the metrics are the rank-average of the same global losses
    assert (tmp_path / "ddp" / "metrics.jsonl").read_text().count("\n") == 3


def test_detect_env_torchrun_slurm_single():
    env = detect_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500",
                      "SLURM_PROCID": "0", "SLURM_NTASKS": "8"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.source) == \
        (3, 4, 1, "n1", 29500, "torchrun")
    env = detect_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123",
                      "SLURM_JOB_NODELIST": "gpu[07-08,11],cpu1"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.source) == (5, 8, 1, "gpu07", "slurm")
    assert env.master_port == detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "123",
                                          "SLURM_JOB_NODELIST": "gpu07"}).master_port
    assert not detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).distributed
    assert detect_env({}).world_size == 1
    assert first_slurm_host("node1,node2") == "node1" and first_slurm_host("a[3]") == "a3"


def test_indivisible_global_batch_is_refused(tmp_path, monkeypatch):
    import masqclip.engine.defaults as defaults

    monkeypatch.setattr(defaults, "get_world_size", lambda: 3)
    cfg = default_setup(toy_cfg(tmp_path))
    with pytest.raises(ValueError, match="IMS_PER_BATCH=4 is not divisible by 3"):
        run_training(cfg, model=ToyModel(), build_loader=lambda *a: iter(()), progress_bar=False)
