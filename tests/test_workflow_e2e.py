"""The tiny CI config (config/ci.yaml) end to end with the real ``masqclip`` CLI: every rule runs,
all tables and plots appear, and a second run schedules nothing. Needs the whole package (data,
models, engine, evaluators, CLIP) and the model YAMLs under config/models/synthetic/."""
from __future__ import annotations

import time

import pytest

from workflow_support import REPO, job_counts, load_config, snakemake

# config/ci.yaml, counted by hand (K = 1): prepare 1, CLIP 1, teachers 2, students 2, the rounds
# control 1, MasQ-Tuning base-novel rounds 0 and 1 + cross-dataset round 1 = 3; evaluations:
# base-novel 3 tests + object score off + frozen CLIP + proposals r0, r1, control + tuned round 0 = 9,
# cross-dataset 1; qualitative 1.
CI_JOBS = {"prepare": 1, "pretrain_clip": 1, "train_teacher": 2, "train_student": 2, "train_control": 1,
           "train_tuning": 3, "evaluate": 10, "qualitative": 1, "manifest": 1, "tables": 1, "plots": 1, "all": 1}


@pytest.mark.slow
def test_ci_config_end_to_end(tmp_path):
    (tmp_path / "config").symlink_to(REPO / "config")
    config = str(REPO / "config/ci.yaml")
    start = time.perf_counter()
    proc = snakemake("--cores", "2", "--configfile", config, workdir=tmp_path, timeout=900)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    print(f"CI config run: {elapsed:.0f} s")
    assert dict(job_counts(proc.stdout + proc.stderr)) == CI_JOBS
    results = tmp_path / load_config("ci.yaml")["results"]
    for name in ("base_novel", "cross_dataset", "ablation_rounds_base-novel", "ablation_object_score_base-novel",
                 "ablation_frozen_clip_base-novel"):
        for ext in ("md", "tex", "csv"):
            assert (results / f"tables/{name}.{ext}").stat().st_size > 0
    rounds = (results / "tables/ablation_rounds_base-novel.md").read_text()
    assert "| round 1 without pseudo-labels (control) |" in rounds  # the control's recall, from its own job
    for name in ("training_base-novel", "training_cross-dataset", "base_novel_base-novel", "clip_zero_shot"):
        assert (results / f"plots/{name}.png").stat().st_size > 1000
    start = time.perf_counter()
    again = snakemake("-n", "--cores", "2", "--configfile", config, workdir=tmp_path)
    print(f"no-op re-run (dry): {time.perf_counter() - start:.1f} s")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
