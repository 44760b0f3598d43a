"""Shared fixtures, and the tests that need something outside the repository.

Three things a fresh clone may not have:

- the reference files (``official_state_dict_keys.txt``) in ``$MASQCLIP_SHARED``, default
  ``../shared`` beside the checkout: fixture ``shared_dir``;
- a running SLURM cluster (``.ci/slurm-up.sh`` starts a one-node one): marker ``slurm``;
- a CUDA device: marker ``gpu``.

Where one is absent its tests skip, naming what is missing, unless the environment asks for it:
``MASQCLIP_REQUIRE_SHARED=1``, ``MASQCLIP_REQUIRE_SLURM=1`` or ``MASQCLIP_REQUIRE_GPU=1`` turn the
absence into a failure (``.ci/run`` sets the first two; a GPU check sets the third:
``MASQCLIP_REQUIRE_GPU=1 python -m pytest -m gpu``).
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASQCLIP_SHARED", REPO.parent / "shared"))
REFERENCE_KEYS = "official_state_dict_keys.txt"

torch.set_num_threads(min(2, torch.get_num_threads()))


def required(name: str) -> bool:
    """Whether ``MASQCLIP_REQUIRE_<name>`` asks for the resource (1 / true / yes)."""
    return os.environ.get(f"MASQCLIP_REQUIRE_{name}", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(name: str, reason: str) -> None:
    """Skip with ``reason``, or fail with it when ``MASQCLIP_REQUIRE_<name>`` is set."""
    if required(name):
        pytest.fail(f"{reason} (MASQCLIP_REQUIRE_{name} is set)", pytrace=False)
    pytest.skip(f"{reason}; set MASQCLIP_REQUIRE_{name}=1 to make this a failure")


@functools.cache
def slurm_absent() -> str | None:
    """Why no SLURM node can take jobs here, or None when one can (asked once per session)."""
    if not shutil.which("sinfo"):
        return "SLURM is not installed (no sinfo); .ci/slurm-up.sh starts a one-node cluster"
    try:  # a host with SLURM installed but not configured makes sinfo retry for a minute
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s (no reachable SLURM controller)"
    states = proc.stdout.split()[1::2]
    if proc.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        answer = (proc.stdout or proc.stderr).strip() or "no output"
        return f"no SLURM node is up (sinfo: {answer[:200]}); .ci/slurm-up.sh starts one"
    return None


def gpu_absent() -> str | None:
    """Why no CUDA device can be used here, or None when one can."""
    if torch.cuda.is_available():
        return None
    return f"no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda or 'none'})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("slurm") and (reason := slurm_absent()):
        skip_or_fail("SLURM", reason)
    if item.get_closest_marker("gpu") and (reason := gpu_absent()):
        skip_or_fail("GPU", reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The folder of reference files (``$MASQCLIP_SHARED``, default ``../shared`` beside the checkout)."""
    if not (SHARED / REFERENCE_KEYS).is_file():
        skip_or_fail("SHARED", f"reference file {SHARED / REFERENCE_KEYS} not found "
                               "(MASQCLIP_SHARED names its folder)")
    return SHARED


@pytest.fixture(scope="session")
def repo_dir() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A datasets root holding a tiny synthetic world in the real formats (2 training images, 6 per
    test set, 1 crop per category), generated once per test session by the real CLI."""
    from masqclip.cli import main as cli

    root = tmp_path_factory.mktemp("tiny_world")
    assert cli(["prepare", "synthetic", "--output", str(root), "--num-train", "2", "--num-val", "6",
                "--crops-train", "1", "--crops-val", "1"]) == 0
    return root
