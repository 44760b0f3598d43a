"""MLflow tracking: run contents queried back, unreachable stores, retries, limits."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from engine_toys import run_toy, toy_cfg
from masqclip.engine.launch import free_port
from masqclip.tracking import DEFAULT_URI, Tracker, default_tags, flatten_metrics, metric_name, parse_tags

REPO = Path(__file__).resolve().parents[1]


def test_tiny_run_is_queryable(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MASQCLIP_INVOCATION", "inv-42")
    uri = f"sqlite:///{tmp_path}/db/mlflow.db"
    cfg = toy_cfg(tmp_path / "out", **{"TRACKING.ENABLED": True})
    tags = default_tags(cfg, job="train", extra=parse_tags(["setting=base_novel", "round=1"]))
    params = cfg.flatten()
    params["LONG"] = "x" * 7000
    tracker = Tracker(uri=uri, experiment="engine-test").start(run_name="toy", tags=tags, params=params)
    run_id = tracker.run_id
    _, final = run_toy(cfg, tracker=tracker, eval_function=lambda: {"segm": {"AP50": 12.5},
                                                                     "proposals": {"AR@10": 40.0}})

    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["engine-test"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.setting"] == "base_novel" and run["tags.round"] == "1" and run["tags.stage"] == "teacher"
    assert run["tags.invocation"] == "inv-42" and run["tags.hostname"] and "tags.git_commit" in runs.columns
    assert run["params.SOLVER.BASE_LR"] == "0.01" and run["params.SOLVER.MAX_ITER"] == "12"
    assert len(run["params.LONG"]) == 6000  # cut to MLflow's limit
    assert sum(c.startswith("params.") for c in runs.columns) == len(params)
    client = MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(run_id, "total_loss")
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(m.step for m in history if m.step < 12) == [r["iteration"] for r in rows]
    assert {m.step: m.value for m in history}[rows[0]["iteration"]] == pytest.approx(rows[0]["total_loss"])
    assert run["metrics.segm/AP50"] == 12.5 and run["metrics.lr"] > 0 and run["metrics.time"] > 0
    assert run["metrics.proposals/AR_10"] == 40.0  # "@" is not allowed in MLflow metric names
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.jsonl", "train_metrics.json", "training_curve.png"} <= artifacts
    assert final["segm/AP50"] == 12.5


def test_unreachable_server_never_stops_training(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    start = time.monotonic()
    tracker = Tracker(uri=f"http://127.0.0.1:{free_port()}", retries=2, backoff_seconds=0.05)
    with pytest.warns(RuntimeWarning, match="MLflow tracking disabled") as record:
        tracker.start(run_name="toy", tags={"stage": "teacher"}, params={"a": 1})
        run_toy(toy_cfg(tmp_path), tracker=tracker)
    assert len([w for w in record if "MLflow" in str(w.message)]) == 1  # warned once
    assert time.monotonic() - start < 30
    assert not tracker.enabled
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 6
    assert json.loads((tmp_path / "train_metrics.json").read_text())["metrics"]["iterations"] == 12


def test_retries_then_succeeds_and_default_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(retries=3, backoff_seconds=0.01)
    assert tracker.uri == DEFAULT_URI == "sqlite:///results/mlflow.db"
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("database is locked")
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracker._call("flaky", flaky) == "ok"
    assert len(calls) == 3 and tracker.enabled
    tracker.start(run_name="default-store", tags={"job": "test"})
    assert tracker.active and (tmp_path / "results" / "mlflow.db").is_file()
    tracker.end()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert Tracker().uri == "sqlite:///elsewhere.db"
    assert not Tracker(enabled=False).start(run_name="x").active


def test_flatten_and_parse_tags():
    assert flatten_metrics({"segm": {"AP": 1, "per": {"cat": 2.0}}, "name": "x", "ok": True}) == \
        {"segm/AP": 1.0, "segm/per/cat": 2.0}
    assert parse_tags(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    assert metric_name("proposals/AR@100_novel") == "proposals/AR_100_novel" and metric_name("a.b c:d-e") == "a.b c:d-e"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_tags(["novalue"])


_JOB = """
import sys
from masqclip.tracking import Tracker
uri, name = sys.argv[1], sys.argv[2]
t = Tracker(uri=uri, experiment="load").start(run_name=name, tags={"job": "train"}, params={"name": name})
for step in range(20):
    t.log_metrics({"total_loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
t.end("FINISHED")
"""


@pytest.mark.slow
def test_eight_jobs_starting_together_on_a_fresh_sqlite_store_record_everything(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    init = subprocess.run([sys.executable, "-m", "masqclip.cli", "track", "init", "--uri", uri, "--experiment", "load"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0 and "created" in init.stdout, init.stderr[-2000:]
    jobs = [subprocess.Popen([sys.executable, "-c", _JOB, uri, f"job{i}"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(8)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert all(job.returncode == 0 for job in jobs)
    assert not [o for o in outputs if "tracking disabled" in o], outputs
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("load").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"job{i}" for i in range(8)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "total_loss")) == list(range(20))


_LOCK_SPY = """
import sys
import masqclip.tracking as tracking
real_lock = tracking._store_lock
def spy(db):
    print("store modules loaded before the lock:", "mlflow.store.tracking.sqlalchemy_store" in sys.modules)
    return real_lock(db)
tracking._store_lock = spy
print(tracking.init_store(sys.argv[1], "exp"))
"""


def test_store_lock_is_taken_after_the_slow_imports(tmp_path):
    """Jobs starting together queue on the store's lock only for the database work, not for the
    seconds MLflow's store modules take to import (a fresh process, so nothing is imported yet)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _LOCK_SPY, uri], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "store modules loaded before the lock: True" in proc.stdout and "created" in proc.stdout, proc.stdout


class _SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers (closed on exit)."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.held, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self):
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                continue

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_an_unresponsive_server_costs_a_job_about_10_seconds(tmp_path, monkeypatch):
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)  # the defaults of TRACKING.* apply (and are undone after the test)
    cfg = toy_cfg(tmp_path, **{"TRACKING.ENABLED": True})
    with _SilentServer() as uri, pytest.warns(RuntimeWarning, match="MLflow tracking disabled") as record:
        cfg.TRACKING.URI = uri
        start = time.monotonic()
        tracker = Tracker.from_config(cfg).start(run_name="toy", tags={"stage": "teacher"}, params={"a": 1})
        tracked = time.monotonic() - start
        run_toy(cfg, tracker=tracker)
        total = time.monotonic() - start
    assert len([w for w in record if "MLflow" in str(w.message)]) == 1 and not tracker.enabled
    assert tracked <= 11, f"starting the run against a silent server took {tracked:.1f} s"
    assert total - tracked < 10, "training kept calling the dead server"
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 6


def test_replay_sends_the_metrics_of_a_job_that_ran_while_tracking_was_down(tmp_path):
    from mlflow.tracking import MlflowClient

    from masqclip.cli import main as cli
    from masqclip.tracking import RUN_ID_FILE, read_run_id, write_run_id

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "job"
    tracker = Tracker(uri=uri).start(run_name="train-teacher-job", tags={"job": "train"})
    write_run_id(str(out / RUN_ID_FILE), tracker.run_id)
    tracker.enabled = False  # the store went away right after the run started
    run_toy(toy_cfg(out), tracker=tracker)
    client = MlflowClient(tracking_uri=uri)
    run_id = read_run_id(str(out / RUN_ID_FILE))
    assert client.get_run(run_id).info.status == "RUNNING" and not client.get_metric_history(run_id, "total_loss")

    files = [str(out / "metrics_log.jsonl"), str(out / "train_metrics.json")]
    assert cli(["track", "replay", *files, "--uri", uri]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    history = {m.step: m.value for m in client.get_metric_history(run_id, "total_loss")}
    assert sorted(history) == [r["iteration"] for r in rows] + [12]  # every row, and the final metrics
    assert history[rows[0]["iteration"]] == pytest.approx(rows[0]["total_loss"])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert cli(["track", "replay", *files, "--uri", uri]) == 0  # again: nothing is duplicated
    assert len(client.get_metric_history(run_id, "total_loss")) == len(rows) + 1
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


def test_a_resumed_job_continues_its_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(uri=uri).start(run_name="job", tags={"job": "train"}, params={"a": 1})
    run_id = first.run_id  # the job is killed: the run stays RUNNING
    second = Tracker(uri=uri).start(run_name="job", tags={"job": "train", "resumed": "1"}, params={"a": 2},
                                    continue_run=run_id)
    assert second.run_id == run_id
    second.end("FINISHED")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1" and run.data.params["a"] == "1"
    assert Tracker(uri=uri).start(run_name="job", continue_run="0" * 32).run_id not in (None, run_id)


def test_stage_tags_use_the_pipeline_stage_names_and_training_runs_carry_their_seed():
    from masqclip.config import get_cfg
    from masqclip.manifest import STAGES

    cfg = get_cfg()
    for arch, stage in (("MaskFormer", "teacher"), ("MaskDistill", "student"), ("MasQTuning", "tuning")):
        cfg.MODEL.META_ARCHITECTURE, cfg.SEED = arch, 7
        tags = default_tags(cfg, job="train")
        assert tags["stage"] == stage and stage in STAGES and tags["seed"] == "7"
    assert default_tags(cfg, job="eval", extra={"seed": "1"})["seed"] == "1"
