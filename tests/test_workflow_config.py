"""Pipeline configs: the shipped ones are valid; bad ones stop the workflow before any job, naming
the field (schema), the reference (cross-field checks) or the model-config key (masqclip's loader);
`snakemake --lint` is clean."""
from __future__ import annotations

import copy

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from masqclip.pipeline.plan import Plan
from workflow_support import REPO, load_config, scratch_config, snakemake

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
SHIPPED = ("config.yaml", "paper.yaml", "ci.yaml", "paper-released.yaml")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_match_the_schema(name):
    validate(load_config(name), SCHEMA)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_name_existing_model_configs(name):
    """Fails until every model YAML a shipped config names exists under config/models/."""
    config = load_config(name)
    files = {s[k]["config"] for s in config["settings"].values() for k in ("teacher", "student", "tuning")
             if "config" in s.get(k, {})}
    files |= {t["config"] for s in config["settings"].values() for t in s["tests"].values() if "config" in t}
    missing = sorted(f for f in files if not (REPO / f).is_file())
    assert not missing, f"config/{name} names model configs that do not exist: {missing}"


BAD = [  # (change, text the error must contain)
    (lambda c: c.update(rounds="two"), "['rounds']"),
    (lambda c: c.pop("rounds"), "'rounds' is a required property"),
    (lambda c: c.update(seeds=[0, 0]), "['seeds']"),
    (lambda c: c.update(extra_key=1), "'extra_key' was unexpected"),
    (lambda c: c["settings"]["base-novel"]["tests"].update(bogus={"dataset": "x"}), "'bogus' is not one of"),
    (lambda c: c["resources"]["default"].update(gpus=1), "'gpus' was unexpected"),
    (lambda c: c["settings"]["base-novel"]["teacher"].update(overrides={"solver.lr": 1}), "'solver.lr' does not match"),
    (lambda c: c["settings"]["cross-dataset"].pop("tuning"), "'tuning' is a required property"),
    (lambda c: c["settings"]["cross-dataset"]["tuning"].update(weights=""), "['settings']"),
    (lambda c: c["ablations"]["object_score"].update(settings=["cross-dataset"]), "['ablations']"),
    (lambda c: c.update(miou_convention="d2"), "'d2' is not one of ['gt', 'd2v06']"),
    (lambda c: c["datasets"]["synthetic"].update(check="partial"), "'partial' is not one of ['full', 'reduced']"),
]


@pytest.mark.parametrize("change,message", BAD)
def test_schema_rejects_bad_configs_naming_the_field(change, message):
    config = copy.deepcopy(load_config("config.yaml"))
    change(config)
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA)
    assert message in str(err.value)


@pytest.mark.parametrize("change,message", [
    (lambda c: c["settings"]["base-novel"].update(datasets=["coco-ovsplit"]),
     "settings.base-novel.datasets: 'coco-ovsplit' is not listed under 'datasets'"),
    (lambda c: c["settings"]["base-novel"]["tests"].pop("constrained_base") and
     c["ablations"]["frozen_clip"].update(tests=["constrained_base"]),
     "ablations.frozen_clip: test 'constrained_base' is not under settings.base-novel.tests"),
    (lambda c: c["settings"]["base-novel"].pop("proposals"), "needs settings.base-novel.proposals"),
])
def test_cross_field_checks_name_the_field(tmp_path, change, message):
    config = yaml.safe_load(scratch_config(tmp_path).read_text())
    change(config)
    with pytest.raises(ValueError) as err:
        Plan.from_config(config)
    assert message in str(err.value)


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    config = scratch_config(tmp_path, rounds=-1)
    proc = snakemake("--cores", "1", "--configfile", str(config), workdir=tmp_path)
    assert proc.returncode != 0 and "['rounds']" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_model_key_stops_snakemake_naming_it(tmp_path):
    path = scratch_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["settings"]["base-novel"]["tuning"]["overrides"] = {"MODEL.MASQ_CLIP.NO_SUCH_KEY": 3}
    path.write_text(yaml.safe_dump(config))
    proc = snakemake("--cores", "1", "--configfile", str(path), workdir=tmp_path)
    assert proc.returncode != 0 and "MODEL.MASQ_CLIP.NO_SUCH_KEY" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean(tmp_path):
    """`snakemake --lint` on the embedded default (config/config.yaml), as a user runs it."""
    (tmp_path / "config").symlink_to(REPO / "config")
    proc = snakemake("--lint", workdir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
