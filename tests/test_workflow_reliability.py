"""The real workflow under real failures: a training job killed with the whole Snakemake process group
and re-run with ``--rerun-incomplete`` keeps its whole metrics history and leaves no RUNNING MLflow
run; shell syntax in a pipeline config never runs."""
from __future__ import annotations

import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from masqclip.pipeline.plan import Plan
from test_cli_train_eval import TINY
from workflow_support import SNAKEFILE, base_env, scratch_config, snakemake

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict:
    env = base_env()
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    return env


def _tiny_pipeline(tmp_path: Path, *, max_iter: int = 8, dataset_args: dict | None = None) -> tuple[Path, dict]:
    """ci.yaml with a tiny real teacher (``max_iter`` iterations, a checkpoint every 2, a row each)
    on a 2-image synthetic world."""
    config_path = scratch_config(tmp_path, base="ci.yaml")
    teacher = copy.deepcopy(TINY)
    teacher["DATASETS"]["TEST"] = []
    (tmp_path / "models" / "teacher.yaml").write_text(yaml.safe_dump(teacher))
    config = yaml.safe_load(config_path.read_text())
    config["datasets"]["synthetic"]["args"] = dataset_args or {
        "seed": 0, "num-train": 2, "num-val": 2, "crops-train": 1, "crops-val": 1, "image-size": 64}
    config["settings"]["base-novel"]["teacher"]["overrides"] = {
        "SOLVER.MAX_ITER": max_iter, "SOLVER.CHECKPOINT_PERIOD": 2, "SOLVER.LOG_PERIOD": 1,
        "SOLVER.IMS_PER_BATCH": 2}
    config_path.write_text(yaml.safe_dump(config))
    return config_path, config


def _mlflow_runs(db: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        return mlflow.search_runs(search_all_experiments=True)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_rerun_incomplete_training_job_keeps_its_whole_history(tmp_path):
    config_path, config = _tiny_pipeline(tmp_path)
    teacher = Path(Plan.from_config(config).stage("teacher", "base-novel", 0).folder)
    target = str(teacher / "model_final.pth")
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(tmp_path), "--workflow-profile",
           "none", target, "--cores", "1", "--configfile", str(config_path)]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not (teacher / "model_0000003.pth").exists():
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the training job: a crashed machine
    finally:
        proc.wait()
        log.close()
    assert not (teacher / "model_final.pth").exists(), "the job finished before it was killed"

    assert snakemake("--unlock", "--configfile", str(config_path), workdir=tmp_path, env=env).returncode == 0
    second = snakemake(target, "--cores", "1", "--rerun-incomplete", "--configfile", str(config_path),
                       workdir=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in (teacher / "log.txt").read_text()
    rows = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(8))

    runs = _mlflow_runs(tmp_path / "results" / "mlflow.db")
    # The killed invocation's pipeline (parent) run stays RUNNING (SIGKILL runs no handler); every
    # job run ended, and the second invocation's pipeline run finished.
    jobs = runs[runs["tags.job"] != "pipeline"]
    assert "RUNNING" not in set(jobs["status"]), runs[["tags.job", "status"]]
    assert "FINISHED" in set(runs[runs["tags.job"] == "pipeline"]["status"])
    train_runs = runs[runs["tags.job"] == "train"]
    assert list(train_runs["status"]) == ["FINISHED"]  # the killed job's run was continued
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/results/mlflow.db").get_metric_history(
        train_runs["run_id"].iloc[0], "total_loss")
    assert {m.step for m in history} >= set(range(8))  # every row reached the run


def _plain_pipeline(tmp_path: Path, **changes) -> Path:
    config_path = scratch_config(tmp_path, base="ci.yaml")
    config = yaml.safe_load(config_path.read_text())
    for key, value in changes.items():
        node = config
        *parents, last = key.split("/")
        for part in parents:
            node = node[part]
        node[last] = value
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def test_shell_syntax_in_an_option_name_is_refused_and_never_runs(tmp_path):
    args = {"seed 0; touch pwned; echo": 1, "num-train": 1, "num-val": 1, "crops-train": 1, "crops-val": 1}
    config = _plain_pipeline(tmp_path, **{"datasets/synthetic/args": args})
    target = str(tmp_path / "results/data/.prepared/synthetic.done")
    proc = snakemake(target, "--cores", "1", "--configfile", str(config), workdir=tmp_path, env=_env(tmp_path))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "seed 0; touch pwned; echo" in out and "does not match" in out, out[-3000:]
    assert not list(tmp_path.rglob("pwned")) and not (REPO / "pwned").exists()


def test_shell_syntax_in_values_and_paths_is_an_inert_argument(tmp_path):
    # A value and a results folder full of shell syntax: the real prepare job receives them verbatim.
    weird = tmp_path / "out $(touch pwned1); touch pwned2 `touch pwned3`"
    args = {"seed": "0; touch pwned4", "num-train": 1, "num-val": 1, "crops-train": 1, "crops-val": 1,
            "image-size": 32}
    config = _plain_pipeline(tmp_path, **{"datasets/synthetic/args": args, "results": str(weird),
                                          "data_root": str(weird / "data"),
                                          "qualitative/base-novel": ["images/$(touch pwned5) x.png"]})
    target = str(weird / "data/.prepared/synthetic.done")
    env = _env(tmp_path)
    proc = snakemake(target, "--cores", "1", "--configfile", str(config), workdir=tmp_path, env=env)
    assert proc.returncode != 0  # the prepare command refuses the seed "0; touch pwned4" ...
    log = (weird / "logs/prepare/synthetic.log").read_text()
    assert "0; touch pwned4" in log, log  # ... as one argument, in the log of the quoted path
    # every shell command of the whole plan (dry run) splits into the intended words
    dry = snakemake("-n", "-p", "--configfile", str(config), workdir=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    image = f"{weird}/data/images/$(touch pwned5) x.png"
    assert f"--image {shlex.quote(image)}" in dry.stdout + dry.stderr
    assert not [p for p in tmp_path.rglob("pwned*")] and not list(REPO.glob("pwned*"))
