"""One pipeline invocation = one MLflow parent run with nested job runs, on a real SQLite store:
structure, names and tags queried back with ``search_runs``, the experiment's kind, the parent's
headline metrics and artifacts, and params limited to the config keys that differ from defaults."""
from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from masqclip.config import get_cfg
from masqclip.tracking import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, PARENT_RUN_ENV, Tracker, finish_pipeline_run,
                               non_default_params, run_name, start_pipeline_run)

TRAIN = {"job": "train", "setting": "base-novel", "stage": "student", "round": "1", "seed": "0",
         "dataset": "synthetic_instance_train_base", "invocation": "abc", "unset": ""}
EVAL = {"job": "eval", "setting": "base-novel", "stage": "tuning", "round": "2", "seed": "0",
        "variant": "masqclip", "test": "generalized", "dataset": "synthetic_instance_val_all"}


def test_run_names_say_what_a_job_is():
    assert run_name(TRAIN) == "base-novel / student r1 / seed 0"
    assert run_name(EVAL) == "eval base-novel / masqclip r2 / generalized / seed 0"
    assert run_name({"job": "train", "stage": "teacher"}) == "teacher"
    assert run_name({**EVAL, "variant": "proposals-r1", "round": "1", "test": "proposals"}) == \
        "eval base-novel / proposals-r1 / proposals / seed 0"


def test_params_are_the_keys_that_differ_from_defaults():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.123", "MODEL.MASK_FORMER.DEC_LAYERS", str(
        get_cfg().MODEL.MASK_FORMER.DEC_LAYERS)])
    assert non_default_params(cfg) == {"SOLVER.BASE_LR": 0.123}


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    yield uri
    mlflow.set_tracking_uri(None)


def test_parent_and_child_runs_queried_back(store, tmp_path, monkeypatch):
    parent = start_pipeline_run(uri=store, experiment="exp", invocation="abc", config={"rounds": 2, "seeds": [0]})
    assert parent
    monkeypatch.setenv(PARENT_RUN_ENV, parent)
    for tags in (TRAIN, EVAL):
        tracker = Tracker(uri=store, experiment="exp").start(run_name=run_name(tags), tags=tags, params={"a": 1})
        tracker.log_metrics({"segm/AP50": 40.0})
        tracker.end()
    tables = tmp_path / "results/tables"
    tables.mkdir(parents=True)
    (tables / "base_novel.csv").write_text(",generalized novel,generalized base\nMasQCLIP (ours),31.9000,51.0000\n")
    finish_pipeline_run(parent, uri=store, results=str(tmp_path / "results"))

    mlflow.set_tracking_uri(store)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("exp")
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI opens the runs view
    children = mlflow.search_runs(experiment_names=["exp"], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(children["tags.mlflow.runName"]) == ["base-novel / student r1 / seed 0",
                                                       "eval base-novel / masqclip r2 / generalized / seed 0"]
    for key in ("setting", "stage", "round", "seed"):
        assert children[f"tags.{key}"].notna().all() and (children[f"tags.{key}"] != "").all()
    assert "tags.unset" not in children.columns  # empty tags are not written
    # The README's filters: one stage of one setting; the evaluations of one variant.
    students = mlflow.search_runs(experiment_names=["exp"],
                                  filter_string="tags.setting = 'base-novel' and tags.stage = 'student'")
    assert list(students["tags.round"]) == ["1"]
    evals = mlflow.search_runs(experiment_names=["exp"],
                               filter_string="tags.job = 'eval' and tags.variant = 'masqclip'")
    assert list(evals["tags.test"]) == ["generalized"] and list(evals["metrics.segm/AP50"]) == [40.0]
    top = client.get_run(parent)
    assert top.info.status == "FINISHED" and top.data.tags["job"] == "pipeline"
    assert top.data.metrics["base_novel/generalized novel"] == 31.9
    assert top.data.params["rounds"] == "2"
    artifacts = {a.path for a in client.list_artifacts(parent)} | {a.path for a in client.list_artifacts(parent, "tables")}
    assert {"pipeline_config.json", "tables/base_novel.csv"} <= artifacts


def test_an_unreachable_store_gives_no_parent_and_no_error(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert start_pipeline_run(uri=f"sqlite:///{blocked}/sub/mlflow.db", invocation="x") == ""
    finish_pipeline_run("", results=str(tmp_path))  # nothing to finish: no error


def test_compare_prints_rounds_side_by_side(store, monkeypatch, capsys):
    from masqclip.cli import main as cli

    old = start_pipeline_run(uri=store, experiment="exp", invocation="old")
    parent = start_pipeline_run(uri=store, experiment="exp", invocation="new")
    for pid, values in ((old, (1.0, 1.0, 1.0)), (parent, (22.5, 30.25, 31.0))):
        monkeypatch.setenv(PARENT_RUN_ENV, pid)
        for rnd, value in zip((2, 0, 1), values):
            tags = {**EVAL, "round": str(rnd), "variant": f"proposals-r{rnd}"}
            tracker = Tracker(uri=store, experiment="exp").start(run_name=run_name(tags), tags=tags)
            tracker.log_metrics({"segm/AP50_novel": value})
            tracker.end()
    monkeypatch.delenv(PARENT_RUN_ENV)
    code = cli(["results", "compare", "--tracking-uri", store, "--experiment", "exp", "--metric", "segm/AP50_novel"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0] == f"pipeline run {parent}: 3 evaluation runs"  # the newest invocation
    rows = [line.split() for line in out[2:]]
    assert [(r[2], r[3], r[-1]) for r in rows] == [("proposals-r0", "0", "30.2"), ("proposals-r1", "1", "31.0"),
                                                   ("proposals-r2", "2", "22.5")]
    code = cli(["results", "compare", "--tracking-uri", store, "--experiment", "exp", "--invocation", "nope"])
    assert code == 2 and "no pipeline run for invocation nope" in capsys.readouterr().err


def test_datasets_and_figures_are_logged(store, tmp_path, monkeypatch):
    import json

    import numpy as np
    from PIL import Image

    root = tmp_path / "datasets"
    (root / ".prepared").mkdir(parents=True)
    (root / ".prepared/synthetic.json").write_text(json.dumps(
        {"preparation": "synthetic", "datasets": {"synthetic_instance_val_all": {"images": 2}}}))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    curve = tmp_path / "curve.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(curve)
    tracker = Tracker(uri=store, experiment="exp").start(run_name=run_name(EVAL), tags=EVAL)
    tracker.log_datasets(["synthetic_instance_val_all", "not_prepared"], "evaluation")
    tracker.log_image(str(curve), key="training_curve")
    run_id = tracker.run_id
    tracker.end()
    parent = start_pipeline_run(uri=store, experiment="exp", invocation="i")
    (tmp_path / "results/plots/qualitative/base-novel").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "results/plots/qualitative/base-novel/0.png")
    finish_pipeline_run(parent, uri=store, results=str(tmp_path / "results"))

    client = MlflowClient(store)
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.tags[0].value) for i in inputs] == [("synthetic_instance_val_all", "evaluation")]
    assert inputs[0].dataset.digest == __import__("hashlib").sha256(
        (root / ".prepared/synthetic.json").read_bytes()).hexdigest()[:16]
    def images(rid):
        return [a.path for a in client.list_artifacts(rid, "images")]
    assert any("training_curve" in p for p in images(run_id))
    assert any("qualitative" in p for p in images(parent))
