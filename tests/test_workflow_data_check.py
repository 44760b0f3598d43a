"""The data check gates the workflow: when `masqclip check-data` refuses a prepared dataset, the
prepare job fails, its done-file never appears, and no training or evaluation job starts."""
from __future__ import annotations

import json

import yaml

from workflow_support import install_stub_cli, scratch_config, snakemake


def test_failed_data_check_stops_the_run_before_any_training(tmp_path):
    config = scratch_config(tmp_path, base="ci.yaml")
    env = install_stub_cli(tmp_path)
    problem = "synthetic_panoptic_train: 15 images, expected 16"
    env["MASQCLIP_STUB_CHECK_FAIL"] = problem
    proc = snakemake("--cores", "2", "--configfile", str(config), workdir=tmp_path, env=env)
    assert proc.returncode != 0
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c[:2] for c in calls if c[0] in ("prepare", "check-data")] == [["prepare", "synthetic"],
                                                                          ["check-data", "synthetic"]]
    assert not [c for c in calls if c[0] in ("train", "eval", "predict")]
    assert not (tmp_path / "results/data/.prepared/synthetic.done").exists()
    assert problem in (tmp_path / "results/logs/prepare/synthetic.log").read_text()


def test_prepare_job_runs_the_check_with_the_configured_expectations(tmp_path):
    config = scratch_config(tmp_path, base="ci.yaml")
    data = yaml.safe_load(config.read_text())
    data["datasets"]["synthetic"]["check"] = "reduced"
    config.write_text(yaml.safe_dump(data))
    proc = snakemake("-n", "-p", "--configfile", str(config), workdir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "&& masqclip check-data synthetic --expect reduced --workers 1" in proc.stdout
