"""Helpers for the workflow tests: stand-in model YAMLs, pipeline configs in a scratch work
directory, a stand-in ``masqclip`` CLI, and running Snakemake on the repository's Snakefile."""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
MODEL_NAMES = ("teacher", "student", "tuning")

# A stand-in for the `masqclip` CLI: writes the files each sub-command promises (docs/architecture.md
# and the rules' contract) with known numbers, logs every call, and hands `plan`, `results` and `config` to
# the real CLI. It lets the tests check the workflow's scheduling without training anything.
STUB_CLI = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    from pathlib import Path
    args = sys.argv[1:]
    with open(os.environ["MASQCLIP_STUB_LOG"], "a") as fh:
        fh.write(json.dumps(args) + "\\n")
    with open(os.environ["MASQCLIP_STUB_LOG"] + ".parent", "a") as fh:  # the MLflow parent run a job sees
        fh.write(os.environ.get("MASQCLIP_PARENT_RUN_ID", "") + "\\n")
    if args[0] in ("results", "config", "plan"):
        from masqclip.cli import main
        sys.exit(main(args))
    def opt(name):
        return args[args.index(name) + 1]
    if args[0] == "prepare":  # the preparation's manifest, under the datasets root every job sees
        manifest = Path(os.environ["DETECTRON2_DATASETS"]) / ".prepared" / (args[1] + ".json")
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({{"preparation": args[1], "datasets": {{}}}}))
        sys.exit(0)
    if args[0] == "check-data":  # MASQCLIP_STUB_CHECK_FAIL: the data check finds a problem
        if os.environ.get("MASQCLIP_STUB_CHECK_FAIL"):
            sys.exit("masqclip check-data " + args[1] + ": " + os.environ["MASQCLIP_STUB_CHECK_FAIL"])
        sys.exit(0)
    if args[0] == "track":  # the store's creation before the first job
        sys.exit(0)
    if args[0] == "pretrain-clip":
        out = Path(opt("--output")); out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"clip")
        Path(opt("--metrics")).write_text(json.dumps({{"zero_shot_top1": 90.0}}))
    elif args[0] == "train":
        out = Path(opt("OUTPUT_DIR")); out.mkdir(parents=True, exist_ok=True)
        fail_once = os.environ.get("MASQCLIP_STUB_FAIL_TRAIN_ONCE")
        if fail_once and not os.path.exists(fail_once):  # a job killed after its first checkpoint
            (out / "last_checkpoint").write_text("model_0000001.pth")
            Path(fail_once).write_text(str(out))
            sys.exit("stub masqclip: killed")
        (out / "model_final.pth").write_bytes(b"weights")
        (out / "metrics.jsonl").write_text("".join(
            json.dumps({{"iteration": i, "total_loss": 10.0 / (i + 1)}}) + "\\n" for i in range(5)))
        (out / "train_metrics.json").write_text(json.dumps({{"iterations": 5}}))
    elif args[0] == "eval":  # --spec: every evaluation of one model (one item each, as the real CLI reads it)
        results = {{"segm": {{"AP": 30.0, "AP50": 50.0, "AP50_base": 60.0, "AP50_novel": 40.0}},
                   "proposals": {{"AR@100": 70.0, "AR@100_base": 80.0, "AR@100_novel": 60.0}},
                   "panoptic_seg": {{"PQ": 20.0, "PQ_th": 18.0, "PQ_st": 25.0}},
                   "sem_seg": {{"mIoU": 33.0}}}}
        items = json.loads(opt("--spec")) if "--spec" in args else [{{
            "config_file": opt("--config-file"), "dataset": opt("--dataset"), "output": opt("--output"),
            "opts": args[args.index("MODEL.WEIGHTS"):]}}]
        for item in items:
            out = Path(item["output"]); out.parent.mkdir(parents=True, exist_ok=True)
            weights = item["opts"][item["opts"].index("MODEL.WEIGHTS") + 1]
            out.write_text(json.dumps({{"dataset": item["dataset"], "config": item["config_file"],
                                       "weights": weights, "results": results}}))
    elif args[0] == "predict":
        import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
        out = Path(opt("--output")); out.parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(out, [[0.0, 1.0], [1.0, 0.0]])
    else:
        sys.exit("stub masqclip: unknown command " + args[0])
''')


def write_model_configs(root: Path) -> Path:
    """Stand-in model YAMLs (valid for masqclip's config loader) under ``root/models``."""
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "Base.yaml").write_text("MODEL:\n  META_ARCHITECTURE: MaskFormer\nSOLVER:\n  MAX_ITER: 10\n")
    for name in MODEL_NAMES:
        (models / f"{name}.yaml").write_text(f"_BASE_: Base.yaml\nOUTPUT_DIR: ./{name}\n")
    return models


def load_config(name: str) -> dict:
    with open(REPO / "config" / name, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def with_model_dir(config: dict, models: Path) -> dict:
    """``config`` with every ``config/models/synthetic/<name>.yaml`` pointed at ``models``."""
    text = yaml.safe_dump(config)
    return yaml.safe_load(text.replace("config/models/synthetic/", f"{models}/"))


def scratch_config(tmp: Path, base: str = "config.yaml", **changes) -> Path:
    """Write ``base`` (stand-in models, results under ``tmp``) with top-level ``changes`` to tmp."""
    config = with_model_dir(copy.deepcopy(load_config(base)), write_model_configs(tmp))
    config.update(results=str(tmp / "results"), data_root=str(tmp / "results/data"),
                  mlflow_tracking_uri=f"sqlite:///{tmp}/results/mlflow.db")
    config.update(changes)
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def install_stub_cli(tmp: Path) -> dict:
    """Environment whose PATH starts with a stand-in ``masqclip``; calls are logged."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "masqclip"
    stub.write_text(STUB_CLI.format(python=sys.executable))
    stub.chmod(0o755)
    env = base_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["MASQCLIP_STUB_LOG"] = str(tmp / "calls.jsonl")
    return env


def base_env() -> dict:
    """This environment with the interpreter's bin folder on PATH (snakemake, masqclip)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    env.pop("MASQCLIP_INVOCATION", None)
    env.pop("MASQCLIP_PARENT_RUN_ID", None)
    return env


def snakemake(*args: str, workdir: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's Snakefile in ``workdir`` (no workflow profile)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir),
           "--workflow-profile", "none", *args]
    return subprocess.run(cmd, cwd=workdir, env=env or base_env(), capture_output=True, text=True, timeout=timeout)


def expand_eval_calls(calls: list[list[str]]) -> list[list[str]]:
    """Logged stand-in calls with each ``eval --spec`` job (one per evaluated model) replaced by one
    single-evaluation call per item: ``eval --config-file F --dataset D --output O --tag K=V ... KEY VALUE ...``."""
    out = []
    for call in calls:
        if call[0] != "eval" or "--spec" not in call:
            out.append(call)
            continue
        for item in json.loads(call[call.index("--spec") + 1]):
            tags = [a for k, v in item.get("tags", {}).items() for a in ("--tag", f"{k}={v}")]
            out.append(["eval", "--config-file", item["config_file"], "--dataset", item["dataset"], "--output",
                        item["output"], *tags, *item.get("opts", [])])
    return out


def job_counts(output: str) -> Counter:
    """``{rule: count}`` from the "Job stats" table of a Snakemake (dry-)run."""
    counts: Counter = Counter()
    block = output.split("Job stats:", 1)
    if len(block) < 2:
        return counts
    for line in block[1].splitlines()[3:]:
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not m:
            break
        if m.group(1) != "total":  # the evaluation jobs (one rule per evaluated model) count as "evaluate"
            counts["evaluate" if m.group(1).startswith("evaluate_") else m.group(1)] += int(m.group(2))
    return counts
