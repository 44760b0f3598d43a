"""Shared fixtures. ``../shared`` (beside the checkout) holds reference files tests may read."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASQCLIP_SHARED", REPO.parent / "shared"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference folder; a missing one is a failure, not a skip."""
    if not (SHARED / "official_state_dict_keys.txt").is_file():
        pytest.fail(f"reference file {SHARED / 'official_state_dict_keys.txt'} not found; "
                    "set MASQCLIP_SHARED to the folder holding it")
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
