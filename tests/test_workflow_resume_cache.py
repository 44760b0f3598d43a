"""Training jobs survive interruption and are shared between checkouts: a failed training job keeps
its checkpoints and the next run resumes it in the same folder; with Snakemake's between-workflow
cache a second checkout reuses the trained models instead of training again."""
from __future__ import annotations

import json
import os

import pytest

from workflow_support import install_stub_cli, job_counts, scratch_config, snakemake


def calls(tmp):
    return [json.loads(line) for line in (tmp / "calls.jsonl").read_text().splitlines()]


def test_failed_training_job_resumes_in_the_same_folder(tmp_path):
    config = scratch_config(tmp_path, base="ci.yaml")
    env = install_stub_cli(tmp_path)
    env["MASQCLIP_STUB_FAIL_TRAIN_ONCE"] = str(tmp_path / "failed-once")
    first = snakemake("--cores", "1", "--configfile", str(config), workdir=tmp_path, env=env)
    assert first.returncode != 0
    killed_dir = (tmp_path / "failed-once").read_text()
    second = snakemake("--cores", "1", "--configfile", str(config), workdir=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    retried = [c for c in calls(tmp_path) if c[0] == "train" and c[c.index("OUTPUT_DIR") + 1] == killed_dir]
    assert len(retried) == 2 and all("--resume" in c for c in retried)
    # Snakemake removed nothing but the declared outputs: the checkpoint is there to resume from.
    assert (tmp_path / killed_dir.split(str(tmp_path) + "/", 1)[-1] / "last_checkpoint").is_file()


@pytest.mark.slow
def test_second_checkout_takes_trained_models_from_the_cache(tmp_path, monkeypatch):
    """... and a checkout whose code has a newer behaviour version (masqclip.BEHAVIOUR_VERSION
    bumped at interpreter start) trains everything again instead of taking the cached models."""
    cache = tmp_path / "cache"
    cache.mkdir()
    newer = tmp_path / "newer_code"
    newer.mkdir()
    (newer / "sitecustomize.py").write_text("import masqclip\nmasqclip.BEHAVIOUR_VERSION += 1\n")
    runs = {}
    for name in ("checkout_a", "checkout_b", "checkout_newer"):
        work = tmp_path / name
        work.mkdir()
        # Relative result paths, so both checkouts run identical commands.
        config = scratch_config(work, base="ci.yaml", results="results", data_root="results/data",
                                mlflow_tracking_uri="sqlite:///results/mlflow.db")
        text = config.read_text().replace(str(work / "models"), str(tmp_path / "models"))
        config.write_text(text)
        if name == "checkout_a":
            (work / "models").rename(tmp_path / "models")
        env = install_stub_cli(work)
        env["SNAKEMAKE_OUTPUT_CACHE"] = str(cache)
        if name == "checkout_newer":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(newer), env.get("PYTHONPATH")]))
        proc = snakemake("--cores", "2", "--cache", "--configfile", str(config), workdir=work, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (work, proc)
    trained_a = [c for c in calls(runs["checkout_a"][0]) if c[0] in ("train", "pretrain-clip")]
    trained_b = [c for c in calls(runs["checkout_b"][0]) if c[0] in ("train", "pretrain-clip")]
    assert len(trained_a) == 9 and trained_b == []  # CLIP + 2 teachers + 2 students + control + 3 tunings
    trained_newer = [c for c in calls(runs["checkout_newer"][0]) if c[0] in ("train", "pretrain-clip")]
    assert len(trained_newer) == 9
    assert any(cache.iterdir())
    assert job_counts(runs["checkout_b"][1].stdout + runs["checkout_b"][1].stderr)["evaluate"] == 6
    assert (runs["checkout_b"][0] / "results/tables/base_novel.md").is_file()
