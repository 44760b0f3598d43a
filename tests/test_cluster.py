"""Cluster jobs without a cluster: stage resources in the SLURM plugin's terms (and the sbatch flags
the installed plugin makes of them), the process launcher of each stage, and the per-node torchrun
of multi-node jobs derived from SLURM's variables. The real SLURM runs are in test_slurm.py."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from masqclip.cluster import job_resources, launcher, torchrun_args
from workflow_support import REPO

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]"}


def test_stage_resources_in_plugin_terms():
    assert job_resources({"mem_mb": 100, "cpus_per_task": 2, "gpu": 0}) == {"mem_mb": 100, "cpus_per_task": 2, "gpu": 0}
    one = job_resources({"gpu": 4, "gpu_model": "a100", "cpus_per_task": 4, "cpus_per_gpu": 8})
    assert one == {"gpu": 4, "gpu_model": "a100", "cpus_per_gpu": 8, "tasks_per_gpu": 0}
    multi = job_resources({"nodes": 2, "gpu": 4, "gpu_model": "h100", "cpus_per_gpu": 8, "mem_mb": 1000,
                           "slurm_extra": "--qos=long"})
    assert multi == {"nodes": 2, "tasks": 2, "mpi": "srun", "gres": "gpu:h100:4", "cpus_per_task": 32,
                     "tasks_per_gpu": 0, "mem_mb": 1000, "slurm_extra": "--qos=long"}
    assert job_resources({"nodes": 3, "gpu": 2})["gres"] == "gpu:2"
    with pytest.raises(ValueError, match="nodes=0"):
        job_resources({"nodes": 0})


def test_launcher_per_stage_shape():
    assert launcher({"gpu": 1}) == "masqclip" and launcher({}) == "masqclip"
    assert launcher({"gpu": 8}) == "torchrun --standalone --nproc-per-node 8 -m masqclip.cli"
    assert launcher({"gpu": 4, "nodes": 2}) == ("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1 "
                                                "python -m masqclip.cluster --nproc-per-node 4 --")


class _Resources(dict):
    __getattr__ = dict.__getitem__


class _Job:
    """The two attributes of a Snakemake job the plugin's sbatch helpers read."""

    def __init__(self, resources: dict):
        self.resources, self.threads = _Resources(resources), 1


def _sbatch_flags(stage_resources: dict) -> str:
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = _Job(job_resources(stage_resources))
    params = {"run_uuid": "x", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "",
              "workdir": ""}
    return get_submit_command(job, params) + set_gres_string(job)


def test_installed_plugin_makes_the_intended_sbatch_flags():
    single = _sbatch_flags({"gpu": 8, "gpu_model": "a100", "cpus_per_task": 4, "cpus_per_gpu": 4,
                            "mem_mb": 64000, "runtime": 2880})
    assert "--gpus=a100:8" in single and "--cpus-per-gpu=4" in single and "--mem 64000" in single
    assert "--ntasks-per-gpu" not in single and "--nodes" not in single  # one task: torchrun forks the rest
    multi = _sbatch_flags({"nodes": 2, "gpu": 4, "cpus_per_gpu": 8, "mem_mb": 64000, "slurm_extra": "--qos=long"})
    assert "--nodes=2" in multi and "--ntasks=2" in multi and "--gres=gpu:4" in multi
    assert "--cpus-per-task=32" in multi and "--qos=long" in multi and "--gpus" not in multi
    cpu = _sbatch_flags({"cpus_per_task": 2, "mem_mb": 100, "gpu": 0})
    assert "--ntasks=1" in cpu and "--cpus-per-task=2" in cpu and "gpu" not in cpu


def test_torchrun_arguments_from_slurm_variables():
    args = torchrun_args(SLURM_ENV, 4, ["train", "--resume"], hostnames=["gpu07", "gpu08"])
    assert args == ["--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "4", "--master-addr", "gpu07",
                    "--master-port", str(15000 + 4242), "-m", "masqclip.cli", "train", "--resume"]
    # every node derives the same rendezvous; MASTER_PORT and the step's own node list win
    step = {**SLURM_ENV, "SLURM_NODEID": "0", "SLURM_STEP_NODELIST": "gpu08", "SLURM_STEP_NUM_NODES": "1",
            "MASTER_PORT": "29555"}
    args0 = torchrun_args(step, 4, ["train"], hostnames=None)
    assert args0[:10] == ["--nnodes", "1", "--node-rank", "0", "--nproc-per-node", "4", "--master-addr", "gpu08",
                          "--master-port", "29555"]
    with pytest.raises(ValueError, match="not inside a SLURM job step .*SLURM_NODEID"):
        torchrun_args({"SLURM_JOB_ID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "a"}, 2, ["train"])


def test_cluster_module_command_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    run = [sys.executable, "-m", "masqclip.cluster", "--nproc-per-node", "2"]
    proc = subprocess.run(run + ["--dry-run", "--", "train", "OUTPUT_DIR", "a b"], env={**env, **SLURM_ENV,
                          "SLURM_JOB_NODELIST": "gpu07"}, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("-m torch.distributed.run --nnodes 2 --node-rank 1 --nproc-per-node 2 "
                                        "--master-addr gpu07 --master-port 19242 -m masqclip.cli train OUTPUT_DIR 'a b'")
    proc = subprocess.run(run + ["--", "train"], env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "not inside a SLURM job step" in proc.stderr
