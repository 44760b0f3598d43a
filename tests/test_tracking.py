"""MLflow tracking: run contents queried back, unreachable stores, retries, limits."""
from __future__ import annotations

import json
import time
import warnings

import pytest

from engine_toys import run_toy, toy_cfg
from masqclip.engine.launch import free_port
from masqclip.tracking import DEFAULT_URI, Tracker, default_tags, flatten_metrics, metric_name, parse_tags


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
