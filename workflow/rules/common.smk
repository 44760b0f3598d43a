"""Config validation, the job plan and input functions. All of the workflow's Python lives here;
the plan itself (which models, evaluations and tables a config asks for) is computed by
``masqclip.pipeline`` so it can be unit-tested without Snakemake."""
import json
import os
import shlex
import uuid

from snakemake.utils import validate

from masqclip.cluster import job_resources, launcher
from masqclip.pipeline.plan import STAGE_FOLDERS, Plan, flags, format_opts

validate(config, schema="../schemas/config.schema.yaml")

# One id per snakemake invocation, inherited by every job (local sub-processes and SLURM jobs
# re-running this file see the parent's value) and written into every MLflow run as a tag.
os.environ.setdefault("MASQCLIP_INVOCATION", uuid.uuid4().hex[:12])
os.environ.setdefault("MLFLOW_TRACKING_URI", config["mlflow_tracking_uri"])
os.environ.update(DETECTRON2_DATASETS=os.path.abspath(config["data_root"]))


envvars:
    "MASQCLIP_INVOCATION",
    "MLFLOW_TRACKING_URI",
    "DETECTRON2_DATASETS",


# The MLflow store exists (created, migrated) before any job starts: jobs starting together on a new
# SQLite store would otherwise race in its schema migration. Not run by dry runs or --lint.
# One MLflow parent run per invocation (config as an artifact, git commit), created before any job
# starts; its id reaches every job through $MASQCLIP_PARENT_RUN_ID, so each job's run is its child.
# At the end it gets the tables and plots as artifacts and the tables' first rows as metrics.
# Tracking failures are warnings: they never stop the workflow. Not run by dry runs or --report.
def tracking_store_init():
    """What `masqclip track init` does, in this process (which imports MLflow for the parent run
    anyway): no second Python start before the first job."""
    import sys

    from masqclip.tracking import init_store

    try:
        init_store(os.environ["MLFLOW_TRACKING_URI"])
    except Exception as err:  # noqa: BLE001 - tracking never stops the workflow
        print(f"warning: masqclip track init failed ({err}); jobs track as they can", file=sys.stderr)


def pipeline_run_start():
    from masqclip.tracking import PARENT_RUN_ENV, start_pipeline_run

    if not os.environ.get(PARENT_RUN_ENV):
        run_id = start_pipeline_run(invocation=os.environ["MASQCLIP_INVOCATION"], config=config)
        if run_id:
            os.environ[PARENT_RUN_ENV] = run_id


def pipeline_run_end(status):
    from masqclip.tracking import PARENT_RUN_ENV, finish_pipeline_run

    finish_pipeline_run(os.environ.get(PARENT_RUN_ENV, ""), results=R, status=status)


onstart:
    tracking_store_init()
    pipeline_run_start()


onsuccess:
    pipeline_run_end("FINISHED")


onerror:
    pipeline_run_end("FAILED")


# Checks every model config (with its overrides) through masqclip's config loader, so an unknown
# key or a wrong type stops the workflow before any job, naming the key and the file.
PLAN = Plan.from_config(config, check_model_configs=True)
R = PLAN.results  # output root, "results" by default


wildcard_constraints:
    setting="|".join(PLAN.settings),
    sig="[0-9a-f]{10}",
    seed=r"\d+",
    round=r"\d+",
    variant="[a-z0-9-]+",
    test="[a-z0-9_]+",
    dataset="[a-z0-9-]+",
    index=r"\d+",


# Every rule's software: the project's conda environment (used with --software-deployment-method conda).
CONDA_ENV = "../../environment.yml"
TRAIN_OUTPUTS = ("model_final.pth", "metrics.jsonl", "train_metrics.json")


def train_outputs(folder):
    """Named outputs of a training job in ``folder``; the final checkpoint is write-protected."""
    weights, curve, metrics = (f"{folder}/{name}" for name in TRAIN_OUTPUTS)
    return {"weights": protected(weights), "curve": curve, "metrics": metrics}


def output_dir(wildcards, output):
    """Folder of a job's first output (OUTPUT_DIR of training, --output-dir of tables/plots)."""
    return os.path.dirname(output[0])


def res(stage):
    """Resources of a stage (``resources.default`` updated by ``resources.<stage>``), in the SLURM
    executor plugin's terms (``masqclip.cluster.job_resources``)."""
    return job_resources(PLAN.resources(stage))


def launch_command(stage):
    """``masqclip`` for one process; torchrun over the GPUs of one node; srun + one torchrun per node
    for ``nodes > 1`` (``masqclip.cluster.launcher``; built from integers only, so unquoted)."""
    return launcher(PLAN.resources(stage))


def stage_of(wildcards, kind):
    """The planned model (a ``masqclip.pipeline.Stage``) the wildcards name; refuses a stale
    signature so an old path can never be rebuilt from the current config."""
    setting = getattr(wildcards, "setting", "")
    return PLAN.stage(kind, setting, int(getattr(wildcards, "round", 0)), wildcards.sig, int(wildcards.seed))


def train_tags(wildcards, stage):
    """MLflow tags of a training job: setting, stage (the plan's name), round and seed."""
    rnd = getattr(wildcards, "round", 0)
    return shlex.join(["--tag", f"setting={wildcards.setting}", "--tag", f"stage={stage}", "--tag", f"round={rnd}",
                       "--tag", f"seed={wildcards.seed}"])


def final_targets(wildcards=None):
    return PLAN.final_targets()
