"""The workflow through the SLURM executor on a one-node cluster (`.ci/slurm-up.sh` starts it;
`.ci/run` does so in CI). Without a cluster these tests skip, or fail under MASQCLIP_REQUIRE_SLURM=1
(as `.ci/run` sets it): the `slurm` marker's check is in conftest.py.

Without accounting (no slurmdbd) there is no `sacct`: jobs are followed with `squeue`, which needs
the cluster's MinJobAge long enough for finished jobs to stay visible (slurm-up.sh sets 600 s)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from workflow_support import REPO, base_env, job_counts

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_ARGS = ("--executor", "slurm", "--slurm-status-command", "squeue", "--slurm-no-account",
              "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "10")
PARTITION = "debug"  # .ci/slurm-up.sh's default partition


@pytest.fixture(scope="module")
def cluster():
    """The partition to submit to (the marker's check in conftest.py has found a node up)."""
    return PARTITION


def run_snakemake(snakefile, workdir, *args, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args]
    return subprocess.run(cmd, cwd=workdir, env=base_env(), capture_output=True, text=True, timeout=timeout)


def test_two_rule_workflow_runs_as_slurm_jobs(tmp_path, cluster):
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(textwrap.dedent("""\
        rule all:
            input: "b.txt"

        rule a:
            output: "a.txt"
            resources: mem_mb=100, runtime=5, cpus_per_task=1
            shell: "echo job=$SLURM_JOB_ID > {output}"

        rule b:
            input: "a.txt"
            output: "b.txt"
            resources: mem_mb=100, runtime=5, cpus_per_task=1
            shell: "cat {input} > {output} && echo job=$SLURM_JOB_ID >> {output}"
        """))
    start = time.perf_counter()
    proc = run_snakemake(snakefile, tmp_path, "--jobs", "2", *SLURM_ARGS, "--workflow-profile", "none",
                         "--default-resources", f"slurm_partition={cluster}", timeout=600)
    print(f"2-rule SLURM workflow: {time.perf_counter() - start:.0f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    lines = (tmp_path / "b.txt").read_text().split()
    assert len(lines) == 2 and all(line.startswith("job=") and line[4:].isdigit() for line in lines)
    assert lines[0] != lines[1]  # two separate SLURM jobs


def test_ci_config_runs_through_the_slurm_profile(tmp_path, cluster):
    """The real CI config with the repository's SLURM profile (account/partition overridden for the
    local cluster). Needs the whole masqclip package and config/models/synthetic/."""
    (tmp_path / "config").symlink_to(REPO / "config")
    start = time.perf_counter()
    proc = run_snakemake(REPO / "Snakefile", tmp_path, "--configfile", str(REPO / "config/ci.yaml"),
                         "--workflow-profile", str(REPO / "workflow/profiles/slurm"), "--jobs", "2", *SLURM_ARGS,
                         "--default-resources", f"slurm_partition={cluster}", "mem_mb=2000", "runtime=30",
                         "cpus_per_task=1", "gpu=0", "--set-resources", f"prepare:slurm_partition={cluster}",
                         timeout=1800)
    print(f"CI config through SLURM: {time.perf_counter() - start:.0f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train_teacher"] == 2 and counts["tables"] == 1
    assert (tmp_path / "results/ci/tables/base_novel.md").is_file()


def _squeue_job_ids(state: str = "") -> set[str]:
    proc = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in proc.stdout.splitlines() if state in line}


def test_cancelled_training_job_resumes_from_its_checkpoint(tmp_path, cluster, tiny_world):
    """A real training job under the repository's SLURM profile is cancelled (scancel) after its first
    periodic checkpoint; Snakemake submits it again (the profile's retries) and the new job resumes
    from that checkpoint (start_iter > 0) to the final model. Jobs see the MLflow URI set where
    snakemake started."""
    import json

    import yaml

    from test_cli_train_eval import TINY

    cfg = json.loads(json.dumps(TINY))
    cfg["SOLVER"].update(MAX_ITER=80, CHECKPOINT_PERIOD=5, LOG_PERIOD=5, STEPS=[60])
    cfg["TRACKING"] = {"ENABLED": False}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(textwrap.dedent("""\
        rule train:
            output: "out/model_final.pth", "out/train_metrics.json"
            log: "train.log"
            resources: mem_mb=1500, runtime=20, cpus_per_task=1
            shell: "echo $MLFLOW_TRACKING_URI > mlflow_uri.txt && masqclip train --config-file tiny.yaml --resume OUTPUT_DIR out >> {log} 2>&1"
        """))
    env = {**base_env(), "DETECTRON2_DATASETS": str(tiny_world), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": "http://mlflow.test:5000"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(tmp_path), "--jobs", "1", *SLURM_ARGS,
           "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
           "--default-resources", f"slurm_partition={cluster}", "gpu=0"]
    before = _squeue_job_ids()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        last = tmp_path / "out" / "last_checkpoint"
        while not last.exists():
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.perf_counter() - start < 600, "no checkpoint after 600 s"
            time.sleep(0.2)
        for _ in range(100):  # the job that wrote the checkpoint, as squeue lists it
            jobs = sorted(_squeue_job_ids("RUNNING") - before)
            if jobs:
                break
            time.sleep(0.3)
        assert len(jobs) == 1, (jobs, subprocess.run(["squeue"], capture_output=True, text=True).stdout)
        subprocess.run(["scancel", jobs[0]], check=True, timeout=30)
        cancelled_at = last.read_text().strip()
        output, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = sorted(_squeue_job_ids() - before)  # a failed test leaves no job of its own running
        if leftover:
            subprocess.run(["scancel", *leftover], timeout=30)
    print(f"cancel-and-resume through SLURM: {time.perf_counter() - start:.0f} s, cancelled after {cancelled_at}")
    assert proc.returncode == 0, output[-6000:]
    assert (tmp_path / "out" / "model_final.pth").is_file()
    metrics = json.loads((tmp_path / "out" / "train_metrics.json").read_text())["metrics"]
    assert 0 < metrics["start_iter"] < 80 and metrics["iterations"] == 80
    assert f"resumed from out/{cancelled_at}" in (tmp_path / "train.log").read_text()  # the second job's log
    assert (tmp_path / "out" / "log.txt").read_text().count("masqclip job: output") == 2  # both jobs, one log.txt
    assert (tmp_path / "mlflow_uri.txt").read_text().strip() == "http://mlflow.test:5000"


def test_per_node_torchrun_under_srun_trains_with_two_processes(tmp_path, cluster, tiny_world):
    """The multi-node launcher on one node: srun starts `python -m masqclip.cluster`, which derives the
    rendezvous from the SLURM step's variables and runs torchrun with 2 processes (gloo on CPU)."""
    import json

    import yaml

    from masqclip.cluster import launcher
    from test_cli_train_eval import TINY

    cfg = json.loads(json.dumps(TINY))
    cfg["TRACKING"] = {"ENABLED": False}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    prefix = launcher({"nodes": 2, "gpu": 2}).replace("--nodes=2 --ntasks=2", "--nodes=1 --ntasks=1")
    command = (f"{prefix} train --config-file tiny.yaml OUTPUT_DIR out").split()
    command[1:1] = [f"--partition={cluster}", "--cpus-per-task=2", "--mem=3000", "--time=10"]
    env = {**base_env(), "DETECTRON2_DATASETS": str(tiny_world), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "out" / "model_final.pth").is_file()
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "rank 0 of 2" in log
    assert (tmp_path / "out" / "log.txt.rank1").is_file()
