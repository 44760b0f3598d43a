"""Dry-run of the real reproduction (config/paper.yaml): exactly the planned jobs, counted by hand.

Paper plan (K = 2 rounds):
- prepare: coco-ovsplit, coco-panoptic-semseg, ade20k-150, ade20k-847, pascal-context-59,
  pascal-context-459 = 6 (no small CLIP: the real one is open_clip's);
- teacher per setting = 2; students rounds 1, 2 per setting = 4;
- MasQ-Tuning: base-novel rounds 0, 1, 2 (rounds ablation: novel AP50 by round) + cross-dataset
  round 2 = 4;
- evaluations: base-novel: final model on constrained base, constrained novel, generalized (3),
  object score off (1), frozen CLIP (1), class-agnostic recall of rounds 0..2 (3), tuned rounds 0
  and 1 (2) = 10; cross-dataset: ADE-150 panoptic, ADE-150 semantic, ADE-847, PC-59, PC-459 = 5;
  in one evaluation job per evaluated model: base-novel MasQ-Tuning rounds 2, 1, 0, students 2
  (frozen CLIP, proposals) and 1, teacher = 6; cross-dataset MasQ-Tuning = 1; 7 in all;
- manifest, tables, plots, all = 1 each; no qualitative figures in the paper config.
"""
from __future__ import annotations

import time

import yaml

from workflow_support import REPO, job_counts, load_config, snakemake, write_model_configs

# config/paper-released.yaml: the two released checkpoints, nothing trained: prepare the 5 test
# datasets; evaluate base-novel 3 tests + object score off, cross-dataset 5 tests: one evaluation job
# per released checkpoint.
RELEASED_JOBS = {"prepare": 5, "evaluate": 2, "manifest": 1, "tables": 1, "plots": 1, "front_page": 1, "all": 1}
PAPER_JOBS = {"prepare": 6, "train_teacher": 2, "train_student": 4, "train_tuning": 4, "evaluate": 7,
              "manifest": 1, "tables": 1, "plots": 1, "front_page": 1, "all": 1}


def _dry_run(config_path, workdir):
    start = time.perf_counter()
    proc = snakemake("-n", "--cores", "1", "--configfile", str(config_path), workdir=workdir)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    print(f"paper dry-run: {elapsed:.1f} s")
    return dict(job_counts(proc.stdout + proc.stderr))


def test_paper_dry_run_lists_exactly_the_planned_jobs(tmp_path):
    """With the real model YAMLs under config/models/ (fails until they exist)."""
    (tmp_path / "config").symlink_to(REPO / "config")
    assert _dry_run(REPO / "config/paper.yaml", tmp_path) == PAPER_JOBS
    assert sum(PAPER_JOBS.values()) == 28


def test_paper_plan_with_stand_in_model_configs(tmp_path):
    """The same plan when the model YAMLs are stand-ins: the count depends on the pipeline config only."""
    models = write_model_configs(tmp_path)
    text = (REPO / "config/paper.yaml").read_text()
    config = yaml.safe_load(text)
    for setting in config["settings"].values():
        for stage in ("teacher", "student", "tuning"):
            setting[stage]["config"] = str(models / "teacher.yaml")
        for test in setting["tests"].values():
            test.pop("config", None)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config("paper.yaml")["rounds"] == 2
    assert _dry_run(path, tmp_path) == PAPER_JOBS


def test_released_checkpoints_dry_run_trains_nothing(tmp_path, monkeypatch):
    """config/paper-released.yaml with stand-in files where the released checkpoints go."""
    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "config").symlink_to(REPO / "config")
    for setting in ("base-novel", "cross-dataset"):
        path = tmp_path / load_config("paper-released.yaml")["settings"][setting]["tuning"]["weights"]
        path.parent.mkdir(parents=True)
        path.write_bytes(setting.encode())
    assert _dry_run(REPO / "config/paper-released.yaml", tmp_path) == RELEASED_JOBS
