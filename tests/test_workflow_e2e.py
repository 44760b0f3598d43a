"""The tiny CI config (config/ci.yaml) end to end with the real ``masqclip`` CLI: every rule runs,
all tables and plots appear, and a second run schedules nothing. Needs the whole package (data,
models, engine, evaluators, CLIP) and the model YAMLs under config/models/synthetic/."""
from __future__ import annotations

import json
import time

import pytest

from workflow_support import REPO, job_counts, load_config, snakemake

# config/ci.yaml, counted by hand (K = 1): prepare 1, CLIP 1, teachers 2, students 2, the rounds
# control 1, MasQ-Tuning base-novel rounds 0 and 1 + cross-dataset round 1 = 3; evaluations:
# base-novel 3 tests + object score off + frozen CLIP + proposals r0, r1, control + tuned round 0 = 9,
# cross-dataset 1, in 6 evaluation jobs (one per evaluated model: base-novel MasQ-Tuning rounds 1
# and 0, student 1, teacher, control; cross-dataset MasQ-Tuning); qualitative 1.
CI_JOBS = {"prepare": 1, "pretrain_clip": 1, "train_teacher": 2, "train_student": 2, "train_control": 1,
           "train_tuning": 3, "evaluate": 6, "qualitative": 1, "manifest": 1, "tables": 1, "plots": 1, "front_page": 1, "all": 1}


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


def make_released_checkpoints(root):
    """A tiny CLIP (``masqclip pretrain-clip``'s file format) and, per setting, a MasQ-Tuning model of
    the synthetic config saved as ``model_final.pth`` in the official release's layout
    (``{"model": state_dict}``, official parameter names): random weights, numbers mean nothing."""
    import torch

    import masqclip.data.datasets  # noqa: F401  (the synthetic vocabularies)
    from masqclip.checkpoint import save_checkpoint
    from masqclip.config import setup_cfg
    from masqclip.modeling import build_model
    from masqclip.modeling.clip import create_clip
    from masqclip.modeling.clip.pretrain import save_pretrained

    torch.manual_seed(0)
    clip = root / "clip/tiny.pt"
    clip.parent.mkdir(parents=True)
    save_pretrained(clip, create_clip(model_name="masqclip-tiny"), {"model_name": "masqclip-tiny", "zero_shot_top1": 0.0})
    weights = {}
    for setting, opts in (("base-novel", []), ("cross-dataset", ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "17",
                                                                 "DATASETS.TRAIN", "('synthetic_panoptic_train',)"])):
        cfg = setup_cfg(str(REPO / "config/models/synthetic/tuning.yaml"),
                        ["MODEL.MASQ_CLIP.PRETRAINED", str(clip), "MODEL.DEVICE", "cpu", *opts])
        weights[setting] = root / setting / "model_final.pth"
        save_checkpoint(weights[setting], build_model(cfg), iteration=0)
    return clip, weights


@pytest.mark.slow
def test_released_checkpoints_end_to_end(tmp_path, monkeypatch):
    """The config shape of config/paper-released.yaml on the synthetic world with the real CLI:
    given checkpoints are evaluated on every test set, nothing is trained, the tables are written."""
    import yaml

    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "config").symlink_to(REPO / "config")
    clip, weights = make_released_checkpoints(tmp_path / "released")
    config = load_config("ci.yaml")
    config["clip"] = {"weights": str(clip)}
    for setting, spec in config["settings"].items():
        spec["tuning"]["weights"] = str(weights[setting])
        del spec["teacher"], spec["student"]
    config["settings"]["base-novel"]["tests"] = {"generalized": config["settings"]["base-novel"]["tests"]["generalized"]}
    config["ablations"] = {}  # kept short: one test per setting
    path = tmp_path / "released.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    proc = snakemake("--cores", "2", "--configfile", str(path), workdir=tmp_path, timeout=900)
    print(f"released-checkpoint run: {time.perf_counter() - start:.0f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    counts = dict(job_counts(proc.stdout + proc.stderr))
    assert not [k for k in counts if k.startswith(("train", "pretrain"))]
    assert counts["evaluate"] == 2 and counts["qualitative"] == 1
    results = tmp_path / config["results"]
    assert not (results / "models").exists()
    for name in ("base_novel", "cross_dataset"):
        assert (results / f"tables/{name}.md").stat().st_size > 0
    assert "| MasQCLIP (paper) | 51.2 |" in (results / "tables/base_novel.md").read_text()
    metrics = json.loads((results / "metrics/base-novel/seed0/masqclip/generalized.json").read_text())
    assert metrics["weights"] == str(weights["base-novel"]) and "segm" in metrics["results"]
