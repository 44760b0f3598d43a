"""The workflow's scheduling, run for real with a stand-in ``masqclip`` CLI (tests/workflow_support.py):
every planned job runs once, a second run schedules nothing, and changing the MasQ-Tuning config
re-runs exactly MasQ-Tuning, its evaluations, the qualitative figures, tables and plots."""
from __future__ import annotations

import base64
import json
import os
import re

import pytest
import yaml

from workflow_support import expand_eval_calls, install_stub_cli, job_counts, scratch_config, snakemake

# The embedded default, counted by hand from config/config.yaml (base-novel K = 2 rounds, the
# rounds ablation without tuning each round, with its control; cross-dataset 1 round): teacher per
# setting, students 2 + 1, the control 1; MasQ-Tuning of the last round per setting; evaluations:
# base-novel 3 tests + object score off + frozen CLIP + proposals of rounds 0..2 and of the control
# = 9, cross-dataset 2 tests, in one evaluation job per evaluated model: base-novel MasQ-Tuning
# (4), student 2 (frozen CLIP, proposals), student 1, teacher, control; cross-dataset MasQ-Tuning
# (2) = 6; qualitative 2 + 1.
DEFAULT_JOBS = {"prepare": 1, "pretrain_clip": 1, "train_teacher": 2, "train_student": 3, "train_control": 1,
                "train_tuning": 2, "evaluate": 6, "qualitative": 3, "manifest": 1, "tables": 1, "plots": 1, "front_page": 1, "all": 1}
# After a change of the base-novel MasQ-Tuning overrides: its tuning job, the evaluation job of the
# tuned model (its 4 evaluations: 3 tests, object score off; not frozen CLIP, not proposals), the 2 base-novel
# qualitative figures, the manifest (its paths changed), tables, plots.
RETUNE_JOBS = {"train_tuning": 1, "evaluate": 1, "qualitative": 2, "manifest": 1, "tables": 1, "plots": 1, "front_page": 1, "all": 1}

pytestmark = pytest.mark.slow  # the module's two workflow runs take ~45 s on 2 busy cores


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workflow")
    config = scratch_config(tmp)
    env = install_stub_cli(tmp)
    proc = snakemake("--cores", "2", "--configfile", str(config), workdir=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, config, env, proc


def test_first_run_runs_every_planned_job_once(finished_run):
    _, _, _, proc = finished_run
    assert dict(job_counts(proc.stderr + proc.stdout)) == DEFAULT_JOBS


def test_outputs_tables_and_plots(finished_run):
    tmp, _, _, _ = finished_run
    tables = tmp / "results/tables"
    for name in ("base_novel", "cross_dataset", "ablation_rounds_base-novel", "ablation_object_score_base-novel",
                 "ablation_frozen_clip_base-novel"):
        for ext in ("md", "tex", "csv"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    # The stand-in evaluation reports AP50_base 60, AP50_novel 40, AP50 50 for every instance test.
    row = (tables / "base_novel.csv").read_text().splitlines()[1].split(",")
    assert row[1:] == ["50.0000", "50.0000", "60.0000", "40.0000", "50.0000"]
    for name in ("training_base-novel", "training_cross-dataset", "base_novel_base-novel", "clip_zero_shot"):
        assert (tmp / f"results/plots/{name}.png").stat().st_size > 1000
    assert len(list((tmp / "results/plots/qualitative").rglob("*.png"))) == 3


def test_commands_follow_the_cli_contract(finished_run):
    tmp, _, _, _ = finished_run
    calls = [json.loads(line) for line in (tmp / "calls.jsonl").read_text().splitlines()]
    trains = [c for c in calls if c[0] == "train"]
    assert all("--resume" in c and "OUTPUT_DIR" in c for c in trains)
    students = [c for c in trains if "stage=student" in c]
    for call in students:  # each student starts from, and is taught by, the previous round's model
        weights = call[call.index("MODEL.WEIGHTS") + 1]
        assert weights == call[call.index("MODEL.DISTILL.TEACHER_WEIGHTS") + 1]
        assert os.path.exists(weights)
    assert len([c for c in calls if c[0] == "eval"]) == DEFAULT_JOBS["evaluate"]  # one process per evaluated model
    evals = [c for c in expand_eval_calls(calls) if c[0] == "eval"]
    assert len(evals) == 11
    no_obj = [c for c in evals if "no-objscore" in c[c.index("--output") + 1]]
    frozen = [c for c in evals if "frozen-clip" in c[c.index("--output") + 1]]
    assert no_obj and all(c[c.index("MODEL.MASQ_CLIP.USE_OBJECT_SCORE") + 1] == "False" for c in no_obj)
    assert frozen and all(c[c.index("MODEL.MASQ_CLIP.TUNING") + 1] == "False" for c in frozen)
    assert all("/student2-" in c[c.index("MODEL.WEIGHTS") + 1] for c in frozen)  # no MasQ-Tuning needed
    assert all(c[c.index("MODEL.MASQ_CLIP.PRETRAINED") + 1].endswith("tiny.pt") for c in frozen + no_obj)


def test_html_report_holds_tables_and_plots(finished_run):
    tmp, config, env, _ = finished_run
    report = tmp / "results/report.html"
    proc = snakemake("--report", str(report), "--configfile", str(config), workdir=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = report.read_text(errors="replace")
    for name in ("base_novel.html", "training_base-novel.png", "clip_zero_shot.png", "Qualitative"):
        assert name in html
    # Each table is in the report as an HTML page (base64 inside the self-contained report), shown
    # in place, not a download: its caption and the stand-in evaluation's numbers are cells.
    pages = {m.group(1): base64.b64decode(m.group(2)).decode() for m in re.finditer(
        r"data:text/html;charset=[^;]*;filename=([^;]+);base64,([A-Za-z0-9+/=]+)", html)}
    assert set(pages) == {f"{n}.html" for n in ("base_novel", "cross_dataset", "ablation_rounds_base-novel",
                                                "ablation_object_score_base-novel", "ablation_frozen_clip_base-novel",
                                                "front")}
    base_novel = pages["base_novel.html"]
    assert "<caption>Open-vocabulary instance segmentation" in base_novel
    cells = re.findall(r"<td>([^<]*)</td>", base_novel)  # generalized all, constrained base/novel, ...
    assert cells == ["50.0", "50.0", "60.0", "40.0", "50.0"]
    assert re.findall(r"<td>([^<]*)</td>", pages["cross_dataset.html"])[:1] == ["33.0"]
    # The front page (the workflow description) holds the headline tables and the rounds plot.
    front = html[html.index("MasQCLIP pipeline run"):]
    assert "Open-vocabulary instance segmentation, base-novel split" in front
    assert "<td>60.0</td><td>40.0</td>" in front
    assert "Progressive distillation rounds (base-novel)" in front
    assert "data:image/png;base64,iVBOR" in front  # the rounds plot, embedded by the front page itself
    assert "<td>60.0</td><td>40.0</td>" in pages["front.html"]


def test_the_invocation_is_one_mlflow_parent_run(finished_run):
    import mlflow

    tmp, _, _, _ = finished_run
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/results/mlflow.db")
    try:
        runs = mlflow.search_runs(experiment_names=["masqclip"], filter_string="tags.job = 'pipeline'")
        client = mlflow.MlflowClient()
        artifacts = {a.path for a in client.list_artifacts(runs["run_id"][0], "tables")} if len(runs) else set()
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1 and runs["status"][0] == "FINISHED"
    parent = runs["run_id"][0]
    # Every job ran inside it (the stand-in CLI logs the parent id each job sees).
    assert set((tmp / "calls.jsonl.parent").read_text().split()) == {parent}
    assert runs["metrics.base_novel/generalized novel"][0] == 40.0  # the stand-in evaluation's number
    assert "tables/base_novel.csv" in artifacts and runs["tags.invocation"][0]


def test_second_run_schedules_nothing(finished_run):
    tmp, config, env, _ = finished_run
    proc = snakemake("-n", "--cores", "2", "--configfile", str(config), workdir=tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_tuning_config_reruns_only_tuning_and_dependants(finished_run):
    tmp, config, env, _ = finished_run
    cfg = yaml.safe_load(config.read_text())
    cfg["settings"]["base-novel"]["tuning"]["overrides"] = {"SOLVER.BASE_LR": 0.0005}
    changed = tmp / "retune.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    dry = snakemake("-n", "--cores", "2", "--configfile", str(changed), workdir=tmp, env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dict(job_counts(dry.stdout + dry.stderr)) == RETUNE_JOBS
    before = len((tmp / "calls.jsonl").read_text().splitlines())
    run = snakemake("--cores", "2", "--configfile", str(changed), workdir=tmp, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    new_calls = [json.loads(x) for x in (tmp / "calls.jsonl").read_text().splitlines()[before:]]
    trained = sorted(c[c.index("--tag") + 3] for c in new_calls if c[0] == "train")
    assert trained == ["stage=tuning"]
    assert all("SOLVER.BASE_LR" in c for c in new_calls if c[0] == "train")


def test_timeline_of_the_run(finished_run):
    """``masqclip results timeline`` on this run's own Snakemake log: every job, the evaluation jobs
    one per model, CPU seconds from the benchmark files, a critical path through real dependencies."""
    from masqclip.results.timeline import parse_log

    tmp, _, _, _ = finished_run
    first = sorted((tmp / ".snakemake" / "log").glob("*.snakemake.log"))[0]  # the first run (later tests run more)
    timeline = parse_log(str(first))
    assert len(timeline.jobs) == sum(DEFAULT_JOBS.values())
    rows = {r["stage"]: r for r in timeline.stage_rows()}
    assert rows["evaluation"]["jobs"] == DEFAULT_JOBS["evaluate"] == rows["evaluation"]["cpu_jobs"]
    path = timeline.critical_path()
    assert path[0].rule == "prepare" and path[-1].rule == "all"
    assert all(set(a.outputs) & set(b.inputs) for a, b in zip(path, path[1:]))
