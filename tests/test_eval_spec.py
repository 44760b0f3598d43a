"""``masqclip eval --spec``: several evaluations of one model in one process give the metrics files
and MLflow runs that separate ``masqclip eval`` processes give; the model is built once where only
test-time options differ; a bad spec is one line and exit 2."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from masqclip.cli import main as cli
from masqclip.commands.eval import model_key
from masqclip.config import setup_cfg
from masqclip.modeling import build_model
from test_masq_tuning import TINY

# (name, dataset, overrides): test-time variants of one model, then one that needs another build.
EVALS = [
    ("all", "synthetic_instance_val_all", []),
    ("no_obj", "synthetic_instance_val_all", ["MODEL.MASQ_CLIP.USE_OBJECT_SCORE", "False"]),
    ("novel", "synthetic_instance_val_novel", ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.5",
                                               "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.5"]),
    ("sem", "synthetic_cross_sem_seg_val", ["MODEL.MASK_FORMER.TEST.SEMANTIC_ON", "True",
                                            "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"]),
    ("frozen", "synthetic_instance_val_all", ["MODEL.MASQ_CLIP.TUNING", "False"]),
]
REUSED = 3  # "no_obj", "novel" and "sem" reuse the model of "all"; "frozen" builds its own


@pytest.fixture()
def tiny_model(tmp_path, tiny_world, monkeypatch):
    """A tiny MasQ-Tuning config file (test sets' own vocabularies, CLIP weights from a file, a seed
    drawn per job as in the synthetic configs) and a checkpoint of it."""
    from masqclip.modeling.clip.factory import create_clip

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tiny_world))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    clip_file = tmp_path / "tiny_clip.pt"
    torch.save(create_clip(model_name="masqclip-tiny", pretrained="").state_dict(), clip_file)
    opts = [str(v) if not isinstance(v, list) else repr(v) for v in TINY]
    cfg = setup_cfg(None, opts + ["MODEL.MASQ_CLIP.VOCABULARY", "[]", "INPUT.MIN_SIZE_TEST", "64",
                                  "INPUT.MAX_SIZE_TEST", "128", "SEED", "-1",
                                  "MODEL.MASQ_CLIP.PRETRAINED", str(clip_file)], freeze=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    return config, weights


def _opts(folder, weights, extra):
    return ["MODEL.WEIGHTS", str(weights), "OUTPUT_DIR", str(folder), *extra]


@pytest.mark.slow
def test_spec_gives_what_separate_evaluations_give(tiny_model, tmp_path, capfd):
    import mlflow

    config, weights = tiny_model
    for name, dataset, extra in EVALS:  # today's one evaluation per process (here: per call)
        assert cli(["eval", "--config-file", str(config), "--dataset", dataset, "--output",
                    str(tmp_path / "alone" / f"{name}.json"), "--tag", f"variant={name}", "--tag", "way=alone",
                    *_opts(tmp_path / "alone" / name, weights, extra)]) == 0
    capfd.readouterr()
    spec = [{"config_file": str(config), "dataset": dataset, "output": str(tmp_path / "spec" / f"{name}.json"),
             "opts": _opts(tmp_path / "spec" / name, weights, extra), "tags": {"variant": name}}
            for name, dataset, extra in EVALS]
    assert cli(["eval", "--spec", json.dumps(spec), "--tag", "way=spec"]) == 0
    assert capfd.readouterr().err.count("model reused") == REUSED

    for name, dataset, _ in EVALS:
        alone = json.loads((tmp_path / "alone" / f"{name}.json").read_text())
        together = json.loads((tmp_path / "spec" / f"{name}.json").read_text())
        assert together["dataset"] == dataset and together["results"] == alone["results"], name
    results = {n: json.loads((tmp_path / "spec" / f"{n}.json").read_text())["results"] for n, *_ in EVALS}
    assert "sem_seg" in results["sem"] and "segm" not in results["sem"]  # the reused model's switches took effect
    assert results["sem"]["sem_seg"]["mIoU"] > 0  # (a random model: not every number is 0)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        runs = mlflow.search_runs(experiment_names=["masqclip"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 2 * len(EVALS) and set(runs["status"]) == {"FINISHED"}
    for way in ("alone", "spec"):  # one run per evaluation, each with its own tags and metrics
        mine = runs[runs["tags.way"] == way]
        assert sorted(mine["tags.variant"]) == sorted(n for n, *_ in EVALS)
        assert sorted(mine["tags.dataset"]) == sorted(d for _, d, _ in EVALS)


def test_reconfigured_model_equals_a_fresh_build(tiny_model):
    """Every plain attribute a build sets from the config is what reconfiguring a built model sets."""
    config, _ = tiny_model
    base = setup_cfg(str(config), ["DATASETS.TEST", "('synthetic_instance_val_all',)"])
    reused = build_model(base)
    for name, dataset, extra in EVALS:
        cfg = setup_cfg(str(config), ["DATASETS.TEST", f"('{dataset}',)", *extra])
        if name == "frozen":
            assert model_key(cfg) != model_key(base)
            continue
        assert model_key(cfg) == model_key(base), name
        reused.reconfigure_for_test(cfg)
        fresh = build_model(cfg)
        plain = {k: v for k, v in vars(fresh).items() if not k.startswith("_") and k != "text_embedder"
                 and not isinstance(v, (torch.nn.Module, torch.Tensor))}
        assert plain and {k: getattr(reused, k) for k in plain} == plain, name


@pytest.mark.parametrize("spec, message", [
    ("[{", "--spec is not valid JSON"),
    ("{}", "--spec must be a non-empty JSON list"),
    ('[{"config_file": "a.yaml", "dataset": "d"}]', "--spec[0].output must be a non-empty string"),
    ('[{"config_file": "a.yaml", "dataset": "d", "output": "o", "opts": ["K"]}]', "--spec[0].opts must be"),
    ('[{"config_file": "a.yaml", "dataset": "d", "output": "o", "colour": 1}]', "unknown key(s) ['colour']"),
    ('[{"config_file": "a.yaml", "dataset": "d", "output": "o"}, {"config_file": "a.yaml", "dataset": "d", '
     '"output": "o"}]', "--spec[1].output: 'o' is written by an earlier evaluation too"),
])
def test_bad_spec_is_one_line(spec, message, capsys):
    assert cli(["eval", "--spec", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_spec_excludes_single_evaluation_arguments(capsys, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text('[{"config_file": "a.yaml", "dataset": "d", "output": "o"}]')
    assert cli(["eval", "--spec", f"@{spec}", "--dataset", "d"]) == 2
    assert "--spec replaces" in capsys.readouterr().err
    assert cli(["eval", "--spec", f"@{tmp_path}/absent.json"]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_job_reruns_to_the_same_result(tiny_model, tmp_path):
    """A real ``masqclip eval --spec`` process killed after its first evaluation leaves that metrics
    file complete and no other; running the job again writes the same numbers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config, weights = tiny_model
    outputs = [tmp_path / "m" / f"{name}.json" for name, *_ in EVALS[:3]]
    spec = json.dumps([{"config_file": str(config), "dataset": dataset, "output": str(out),
                        "opts": _opts(tmp_path / "eval" / name, weights, extra)}
                       for (name, dataset, extra), out in zip(EVALS[:3], outputs)])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "masqclip.cli", "eval", "--spec", spec], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not outputs[0].exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert outputs[0].exists(), "the job ended before its first metrics file"
    first = json.loads(outputs[0].read_text())  # complete: written to a temporary name, then renamed
    assert not outputs[2].exists()
    subprocess.run([sys.executable, "-m", "masqclip.cli", "eval", "--spec", spec], env=env, check=True,
                   capture_output=True)
    assert json.loads(outputs[0].read_text())["results"] == first["results"]
    assert all(json.loads(o.read_text())["results"] for o in outputs)
