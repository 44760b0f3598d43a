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
