"""Seeds and given checkpoints through the workflow, with the stand-in ``masqclip`` CLI
(tests/workflow_support.py): ``--config 'seeds=[0,1]'`` trains and evaluates every stage once per
seed and the tables show mean +- std; a config that gives the final models' weights trains nothing
and still writes every table."""
from __future__ import annotations

import json

import pytest
import yaml

from workflow_support import expand_eval_calls, install_stub_cli, job_counts, scratch_config, snakemake

# config/ci.yaml per seed (tests/test_workflow_e2e.py): CLIP 1, teachers 2, students 2, control 1,
# MasQ-Tuning 3, evaluations 10 in 6 evaluation jobs (one per evaluated model).
CI_TRAINED_PER_SEED = {"pretrain_clip": 1, "train_teacher": 2, "train_student": 2, "train_control": 1,
                       "train_tuning": 3}


def tags(call):
    return dict(call[i + 1].split("=", 1) for i, a in enumerate(call[:-1]) if a == "--tag")


def calls(tmp):
    return expand_eval_calls([json.loads(line) for line in (tmp / "calls.jsonl").read_text().splitlines()])


@pytest.mark.slow
def test_two_seeds_from_the_command_line(tmp_path):
    config = scratch_config(tmp_path, base="ci.yaml")
    env = install_stub_cli(tmp_path)
    proc = snakemake("--cores", "2", "--configfile", str(config), "--config", "seeds=[0,1]", workdir=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert {k: counts[k] for k in CI_TRAINED_PER_SEED} == {k: 2 * v for k, v in CI_TRAINED_PER_SEED.items()}
    assert counts["evaluate"] == 12 and counts["tables"] == 1
    made = calls(tmp_path)
    for job in ("train", "eval"):  # every MLflow run carries its seed; a training job runs with it
        runs = [(tags(c), c) for c in made if c[0] == job]
        assert {t["seed"] for t, _ in runs} == {"0", "1"}
        assert all(c[c.index("SEED") + 1] == t["seed"] for t, c in runs if job == "train")
    assert {c[c.index("--seed") + 1] for c in made if c[0] == "pretrain-clip"} == {"0", "1"}
    table = (tmp_path / "results/tables/base_novel.md").read_text()
    assert "| MasQCLIP (ours) | 50.0 ± 0.0 |" in table and "seeds 0, 1" in table  # the stand-in reports 50 always
    csv = (tmp_path / "results/tables/base_novel.csv").read_text()
    assert "MasQCLIP (ours) (seed 1)," in csv
    manifest = json.loads((tmp_path / "results/manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and len(manifest["evaluations"]) == 20


@pytest.mark.slow
def test_given_checkpoints_train_nothing(tmp_path):
    config_path = scratch_config(tmp_path, base="ci.yaml")
    config = yaml.safe_load(config_path.read_text())
    weights = {}
    for name in ("clip", "base-novel", "cross-dataset"):
        weights[name] = tmp_path / "released" / name / ("tiny.pt" if name == "clip" else "model_final.pth")
        weights[name].parent.mkdir(parents=True)
        weights[name].write_bytes(name.encode())
    config["clip"] = {"weights": str(weights["clip"])}
    for setting in ("base-novel", "cross-dataset"):
        spec = config["settings"][setting]
        spec["tuning"]["weights"] = str(weights[setting])
        for kind in ("teacher", "student"):
            spec.pop(kind)
    config["ablations"] = {"object_score": config["ablations"]["object_score"]}
    config_path.write_text(yaml.safe_dump(config))
    env = install_stub_cli(tmp_path)
    env["MASQCLIP_CACHE"] = str(tmp_path / "cache")
    proc = snakemake("--cores", "2", "--configfile", str(config_path), workdir=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    made = calls(tmp_path)
    assert not [c for c in made if c[0] in ("train", "pretrain-clip")]
    evals = [c for c in made if c[0] == "eval"]
    assert len(evals) == 5  # base-novel 3 tests + object score off, cross-dataset 1
    for c in evals:
        setting = "base-novel" if "/base-novel/" in c[c.index("--output") + 1] else "cross-dataset"
        assert c[c.index("MODEL.WEIGHTS") + 1] == str(weights[setting])
        assert c[c.index("MODEL.MASQ_CLIP.PRETRAINED") + 1] == str(weights["clip"])
    for name in ("base_novel", "cross_dataset", "ablation_object_score_base-novel"):
        assert (tmp_path / f"results/tables/{name}.md").is_file()
    assert not (tmp_path / "results/models").exists()
    # new content in a given file: its evaluations run again, still nothing is trained
    weights["base-novel"].write_bytes(b"other release")
    dry = snakemake("-n", "--cores", "2", "--configfile", str(config_path), workdir=tmp_path, env=env)
    counts = job_counts(dry.stdout + dry.stderr)
    assert counts["evaluate"] == 1 and not any(k.startswith(("train", "pretrain")) for k in counts)
