"""Process-group set-up for data-parallel training: torchrun (env://), SLURM tasks, or local spawn.

Backend: ``gloo`` on CPU, ``nccl`` on CUDA. Nothing here assumes a GPU; a 2-process gloo run on CPU
is how the tests check data parallelism.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist

from ..utils.logger import get_logger

from ..cluster import SLURM_PORT_BASE, SLURM_PORT_RANGE, first_slurm_host

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = LOCALHOST
    master_port: int = 0
    source: str = "single"  # single | torchrun | slurm | spawn

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read rank and world size from torchrun's variables, else SLURM's, else a single process.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        A ``DistEnv``; torchrun (``RANK``/``WORLD_SIZE``) wins over SLURM (``SLURM_PROCID``/``SLURM_NTASKS``).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                       local_rank=int(env.get("LOCAL_RANK", 0)),
                       master_addr=env.get("MASTER_ADDR", LOCALHOST),
                       master_port=int(env.get("MASTER_PORT", 0)), source="torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or LOCALHOST
        port = env.get("MASTER_PORT")
        if port is None:
            port = SLURM_PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % SLURM_PORT_RANGE
        return DistEnv(rank=int(env["SLURM_PROCID"]), world_size=int(env["SLURM_NTASKS"]),
                       local_rank=int(env.get("SLURM_LOCALID", 0)),
                       master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
                       master_port=int(port), source="slurm")
    return DistEnv()


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(env: DistEnv, device: torch.device) -> torch.device:
    """Join the process group described by ``env`` (no-op for one process).

    Args:
        env: from ``detect_env``.
        device: the configured device type; a CUDA device becomes ``cuda:<local_rank>``.

    Returns:
        The device this process should use.
    """
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    if not env.distributed or dist.is_initialized():
        return device
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    dist.init_process_group(backend=backend_for(device), init_method="env://",
                            rank=env.rank, world_size=env.world_size)
    get_logger("engine").info("joined %s process group: rank %d of %d (%s, %s)", backend_for(device),
                              env.rank, env.world_size, env.source, device)
    return device


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across ranks (no-op for one process)."""
    if get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Mean of each scalar over ranks (every rank must call with the same keys, in any order)."""
    if get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = (t / get_world_size()).cpu()
    return {k: float(v) for k, v in zip(keys, t)}


def free_port() -> int:
    """An unused TCP port on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, main_func: Callable, world_size: int, port: int, args: tuple) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR=LOCALHOST, MASTER_PORT=str(port))
    try:
        main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(main_func: Callable, num_processes: int, args: tuple = ()) -> Any:
    """Run ``main_func(*args)``: directly, or in ``num_processes`` local processes.

    Already under torchrun/SLURM (or ``num_processes <= 1``), this process runs it as is; otherwise
    it spawns the processes with torch.multiprocessing, each seeing torchrun-style variables.
    """
    if num_processes <= 1 or detect_env().distributed:
        return main_func(*args)
    import torch.multiprocessing as mp

    mp.spawn(_spawned, nprocs=num_processes, args=(main_func, num_processes, free_port(), args))
    return 0
