"""Cluster jobs: a stage's resources in the SLURM executor plugin's terms, the command that starts its
processes, and the per-node torchrun of multi-node jobs.

A stage's resources (``resources.<stage>`` of the pipeline config) use Snakemake's standard names:
``gpu`` (GPUs per node), ``gpu_model``, ``nodes``, ``cpus_per_task`` or ``cpus_per_gpu``, ``mem_mb``
(per node), ``runtime`` (minutes), ``slurm_partition``, ``slurm_extra`` (site flags, passed to sbatch
as they are). Processes:

- ``gpu`` <= 1, one node: ``masqclip`` itself (one process).
- ``gpu`` > 1, one node: ``torchrun --standalone`` with one process per GPU.
- ``nodes`` > 1: the job's script runs ``srun`` with one task per node; each task runs
  ``python -m masqclip.cluster``, which derives the rendezvous from SLURM's environment (the
  first host of the step's node list, the node's index, a port from the job id) and execs torchrun
  with ``gpu`` processes on its node. NCCL on GPUs, gloo on CPUs; ``SOLVER.IMS_PER_BATCH`` stays the
  global batch.

No torch here: the workflow imports this module while it parses.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Mapping, Sequence

MODULE = "masqclip.cluster"
# Under SLURM without MASTER_PORT, every task of a job derives the same port from the job id.
SLURM_PORT_BASE = 15000
SLURM_PORT_RANGE = 20000


def first_slurm_host(nodelist: str) -> str:
    """First host name of a SLURM node list: ``"gpu[03-05,9],cpu1"`` -> ``"gpu03"``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot parse SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def job_resources(resources: Mapping) -> dict:
    """A stage's resources as the SLURM executor plugin (2.6+) reads them.

    GPU jobs get ``tasks_per_gpu: 0`` (one task; torchrun starts the per-GPU processes, not SLURM),
    and ``cpus_per_gpu``, where given, replaces a ``cpus_per_task`` (e.g. from ``resources.default``),
    which the plugin would otherwise prefer. A multi-node job asks for ``gpu`` GPUs on *every* node (``gres: gpu[:model]:N``, per node, instead
    of the plugin's job-wide ``--gpus``), one task per node, ``cpus_per_gpu`` x ``gpu`` CPUs per
    task, and ``mpi: srun`` so that the plugin runs the rule's command in the job script, where its
    own ``srun`` may start one task per node.
    """
    res = dict(resources)
    nodes, gpu = int(res.get("nodes", 1)), int(res.get("gpu", 0))
    if nodes < 1 or gpu < 0:
        raise ValueError(f"resources: nodes={nodes}, gpu={gpu}: expected nodes >= 1 and gpu >= 0")
    if gpu > 0:
        res.setdefault("tasks_per_gpu", 0)
        if "cpus_per_gpu" in res:
            res.pop("cpus_per_task", None)
    if nodes == 1:
        res.pop("nodes", None)
        return res
    model = res.pop("gpu_model", None)
    res.pop("gpu", None)
    if gpu > 0:
        res["gres"] = f"gpu:{model}:{gpu}" if model else f"gpu:{gpu}"
        if "cpus_per_gpu" in res:
            res["cpus_per_task"] = int(res.pop("cpus_per_gpu")) * gpu
    res.update(nodes=nodes, tasks=nodes, mpi="srun")
    return res


def launcher(resources: Mapping, program: str = "masqclip") -> str:
    """The command prefix that runs ``masqclip <subcommand> ...`` with a stage's resources."""
    nodes, gpu = int(resources.get("nodes", 1)), int(resources.get("gpu", 0))
    if nodes > 1:
        return (f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 "
                f"python -m {MODULE} --nproc-per-node {max(gpu, 1)} --")
    if gpu > 1:
        return f"torchrun --standalone --nproc-per-node {gpu} -m masqclip.cli"
    return program


def slurm_hostnames(nodelist: str) -> list[str]:
    """Every host of a SLURM node list: ``scontrol show hostnames`` where it exists, else the first host."""
    if shutil.which("scontrol"):
        proc = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                              timeout=60)
        hosts = proc.stdout.split()
        if proc.returncode == 0 and hosts:
            return hosts
    return [first_slurm_host(nodelist)]


def torchrun_args(environ: Mapping[str, str], nproc_per_node: int, command: Sequence[str],
                  hostnames: Sequence[str] | None = None) -> list[str]:
    """torchrun's arguments for this node of a multi-node SLURM step.

    Args:
        environ: a SLURM task's environment (``SLURM_JOB_ID``, ``SLURM_NODEID``, ``SLURM_NNODES`` or
            ``SLURM_STEP_NUM_NODES``, ``SLURM_STEP_NODELIST`` or ``SLURM_JOB_NODELIST``; ``MASTER_PORT``
            overrides the port derived from the job id).
        nproc_per_node: processes (GPUs) on this node.
        command: ``masqclip`` sub-command and arguments.
        hostnames: the node list expanded (default: ``slurm_hostnames``).

    Returns:
        ``--nnodes N --node-rank R --nproc-per-node G --master-addr H --master-port P -m masqclip.cli ...``:
        a static rendezvous on the step's first host, the same on every node.
    """
    missing = [k for k in ("SLURM_JOB_ID", "SLURM_NODEID") if k not in environ]
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    nnodes = environ.get("SLURM_STEP_NUM_NODES") or environ.get("SLURM_NNODES")
    if missing or not nodelist or not nnodes:
        raise ValueError("not inside a SLURM job step (missing "
                         f"{', '.join(missing + ([] if nodelist else ['SLURM_JOB_NODELIST']) + ([] if nnodes else ['SLURM_NNODES']))}); "
                         "run under srun, one task per node")
    hosts = list(hostnames) if hostnames is not None else slurm_hostnames(nodelist)
    port = int(environ.get("MASTER_PORT") or SLURM_PORT_BASE + int(environ["SLURM_JOB_ID"]) % SLURM_PORT_RANGE)
    return ["--nnodes", str(int(nnodes)), "--node-rank", str(int(environ["SLURM_NODEID"])),
            "--nproc-per-node", str(int(nproc_per_node)), "--master-addr", hosts[0], "--master-port", str(port),
            "-m", "masqclip.cli", *command]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="one node's torchrun of a multi-node "
                                     "SLURM job (started by srun, one task per node)")
    parser.add_argument("--nproc-per-node", type=int, required=True, help="processes (GPUs) per node")
    parser.add_argument("--dry-run", action="store_true", help="print the torchrun command instead of running it")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- masqclip sub-command and arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no masqclip sub-command given after --")
    try:
        run_args = torchrun_args(os.environ, args.nproc_per_node, command)
    except ValueError as err:
        print(f"{MODULE}: {err}", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "torch.distributed.run", *run_args]
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
