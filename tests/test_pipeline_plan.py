"""The job plan behind the rules (masqclip/pipeline/plan.py), on its own: signatures change exactly
where a config change (or the code's behaviour version) must re-train, the lineage of rounds, seeds,
given checkpoints, each evaluation variant's overrides, the manifest, and no import circle with the
result tables and plots."""
from __future__ import annotations

import copy
import re
import shlex

import pytest

from masqclip.config import ConfigError
from masqclip.pipeline.plan import Plan, flags, format_opts
from workflow_support import load_config, with_model_dir, write_model_configs


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "cache"))  # checkpoint hashes
    return with_model_dir(load_config("config.yaml"), write_model_configs(tmp_path))


def sigs(plan):
    return {key: stage.sig for key, stage in plan.stages.items()}


def changed(base, setting, stage, overrides):
    cfg = copy.deepcopy(base)
    cfg["settings"][setting][stage]["overrides"] = overrides
    return Plan.from_config(cfg)


def test_round_lineage_and_tuned_rounds(config):
    config["ablations"]["rounds"]["tune"] = True
    plan = Plan.from_config(config)
    for setting in ("base-novel", "cross-dataset"):
        for rnd in range(1, plan.rounds_of(setting) + 1):  # round k starts from and is taught by round k-1
            student = plan.stages[("student", setting, rnd, 0)]
            parent = plan.generator(setting, rnd - 1).weights
            assert student.opts["MODEL.WEIGHTS"] == student.opts["MODEL.DISTILL.TEACHER_WEIGHTS"] == parent
            assert parent in student.inputs
    assert plan.rounds_of("base-novel") == 2 and plan.rounds_of("cross-dataset") == 1  # the embedded default
    assert plan.tuned_rounds("base-novel") == [0, 1, 2] and plan.tuned_rounds("cross-dataset") == [1]
    assert plan.stages[("tuning", "base-novel", 2, 0)].opts["MODEL.MASQ_CLIP.PRETRAINED"] == plan.clip.weights


def test_tuning_change_touches_only_tuning_signatures(config):
    config["ablations"]["rounds"]["tune"] = True
    before = sigs(Plan.from_config(config))
    after = sigs(changed(config, "base-novel", "tuning", {"SOLVER.BASE_LR": 0.001}))
    diff = {k for k in before if before[k] != after[k]}
    assert diff == {("tuning", "base-novel", r, 0) for r in range(3)}


def test_teacher_change_propagates_down_the_lineage(config):
    before = sigs(Plan.from_config(config))
    after = sigs(changed(config, "base-novel", "teacher", {"SOLVER.MAX_ITER": 7}))
    diff = {k for k in before if before[k] != after[k]}
    assert diff == {k for k in before if k[1] == "base-novel"}


def test_base_yaml_change_is_seen_through_the_base_chain(config, tmp_path):
    before = sigs(Plan.from_config(config))
    (tmp_path / "models/Base.yaml").write_text("MODEL:\n  META_ARCHITECTURE: MaskFormer\nSOLVER:\n  MAX_ITER: 11\n")
    assert all(a != b for a, b in zip(before.values(), sigs(Plan.from_config(config)).values()))


def test_evaluation_variants(config):
    plan = Plan.from_config(config)
    final = plan.stages[("tuning", "base-novel", 2, 0)]
    no_obj = plan.evaluation("base-novel", "no-objscore", "generalized")
    assert no_obj.weights == final.weights and no_obj.opts["MODEL.MASQ_CLIP.USE_OBJECT_SCORE"] is False
    frozen = plan.evaluation("base-novel", "frozen-clip", "generalized")
    assert frozen.weights == plan.generator("base-novel", 2).weights  # no MasQ-Tuning needed
    assert frozen.opts["MODEL.MASQ_CLIP.TUNING"] is False and frozen.config == final.config
    props = plan.evaluation("base-novel", "proposals-r1", "proposals")
    assert props.config == plan.generator("base-novel", 1).config and "MODEL.MASQ_CLIP.PRETRAINED" not in props.opts
    novel = plan.evaluation("base-novel", "masqclip", "constrained_novel")
    assert novel.opts["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD"] == 0.5
    assert novel.path.endswith("metrics/base-novel/seed0/masqclip/constrained_novel.json")
    with pytest.raises(ValueError, match="no evaluation"):
        plan.evaluation("cross-dataset", "frozen-clip", "ade150")


def test_a_setting_may_run_fewer_rounds(config):
    config["rounds"], config["ablations"]["rounds"]["tune"] = 2, False
    config["settings"]["cross-dataset"]["rounds"] = 1
    plan = Plan.from_config(config)
    assert plan.rounds_of("cross-dataset") == 1 and plan.rounds_of("base-novel") == 2
    assert ("student", "cross-dataset", 1, 0) in plan.stages and ("student", "cross-dataset", 2, 0) not in plan.stages
    final = plan.final_stage("cross-dataset")
    assert final.round == 1 and final.opts["MODEL.WEIGHTS"] == plan.generator("cross-dataset", 1).weights
    assert all(e.weights == final.weights for e in plan.evaluations if e.setting == "cross-dataset")
    assert plan.qualitative_opts("cross-dataset").items() >= final.model_overrides.items()
    # the rounds ablation's table and plot read the top-level count: its settings may not differ
    config["settings"]["base-novel"]["rounds"] = 1
    with pytest.raises(ValueError, match="settings.base-novel.rounds must equal"):
        Plan.from_config(config)


def test_rounds_control_is_round_one_without_pseudo_labels(config):
    config["ablations"]["rounds"]["control"] = True
    plan = Plan.from_config(config)
    control, student = plan.stages[("control", "base-novel", 1, 0)], plan.stages[("student", "base-novel", 1, 0)]
    teacher = plan.generator("base-novel", 0)
    assert control.config == student.config and control.opts["MODEL.WEIGHTS"] == teacher.weights
    assert "MODEL.DISTILL.TEACHER_WEIGHTS" not in control.opts  # no teacher: plain Mask2Former loss
    assert control.overrides["MODEL.META_ARCHITECTURE"] == "MaskFormer" and teacher.weights in control.inputs
    assert control.folder.rsplit("/", 1)[1] == f"control1-{control.sig}" and control.sig != student.sig
    props = plan.evaluation("base-novel", "proposals-control", "proposals")
    assert props.weights == control.weights and props.opts["MODEL.META_ARCHITECTURE"] == "MaskFormer"
    assert ("control", "cross-dataset", 1, 0) not in plan.stages  # only the rounds ablation's settings
    assert plan.resources("control") == plan.resources("student")
    # it follows the student's config and the teacher: a student change re-trains it, a tuning change does not
    assert changed(config, "base-novel", "student", {"SOLVER.MAX_ITER": 9}).stages[("control", "base-novel", 1, 0)].sig \
        != control.sig
    assert changed(config, "base-novel", "tuning", {"SOLVER.MAX_ITER": 9}).stages[("control", "base-novel", 1, 0)].sig \
        == control.sig
    config["ablations"]["rounds"]["control"] = False
    plan = Plan.from_config(config)
    assert not plan.stages_of("control") and not any(e.variant == "proposals-control" for e in plan.evaluations)
    config["ablations"]["rounds"]["control"], config["rounds"] = True, 0  # nothing to compare with: refused
    with pytest.raises(ValueError, match="ablations.rounds.control"):
        Plan.from_config(config)


def test_stale_signature_is_refused(config):
    plan = Plan.from_config(config)
    with pytest.raises(ValueError, match="not the current config"):
        plan.stage("teacher", "base-novel", 0, "0123456789")


def test_bad_model_override_fails_naming_the_key(config):
    config["settings"]["base-novel"]["student"]["overrides"] = {"MODEL.NOT_A_KEY": 1}
    with pytest.raises(ConfigError, match="MODEL.NOT_A_KEY"):
        Plan.from_config(config, check_model_configs=True)


def test_command_line_formatting():
    opts = format_opts({"DATASETS.TRAIN": ["a"], "X": "two words", "B": False})
    assert shlex.split(opts) == ["DATASETS.TRAIN", "('a',)", "X", "two words", "B", "False"]
    assert flags({"num-train": 8, "fast": True, "slow": False, "output": "a b"}) == "--num-train 8 --fast --output 'a b'"


def test_behaviour_version_and_world_version_change_every_signature(config, monkeypatch):
    """A model trained by older code (or on an older synthetic world) is never reused: bumping either
    version gives every trained stage a new folder, so the workflow re-trains it."""
    import masqclip
    import masqclip.data.synthetic.world as world

    before = Plan.from_config(config)
    monkeypatch.setattr(masqclip, "BEHAVIOUR_VERSION", masqclip.BEHAVIOUR_VERSION + 1)
    bumped = Plan.from_config(config)
    assert all(before.stages[k].sig != bumped.stages[k].sig for k in before.stages)
    assert before.clip.sig != bumped.clip.sig
    assert {s.folder for s in before.trained_stages()}.isdisjoint(s.folder for s in bumped.trained_stages())
    monkeypatch.setattr(masqclip, "BEHAVIOUR_VERSION", masqclip.BEHAVIOUR_VERSION - 1)
    assert sigs(Plan.from_config(config)) == sigs(before)  # back to the same code: the same folders
    monkeypatch.setattr(world, "WORLD_VERSION", world.WORLD_VERSION + 1)
    assert all(a != b for a, b in zip(sigs(before).values(), sigs(Plan.from_config(config)).values()))


def test_seeds_multiply_every_trained_stage_and_evaluation(config):
    one = Plan.from_config(config)
    assert one.seeds == [0]
    config["seeds"] = [0, 1]
    two = Plan.from_config(config)
    assert len(two.stages) == 2 * len(one.stages) and len(two.evaluations) == 2 * len(one.evaluations)
    assert {k[:3] for k in two.stages} == {k[:3] for k in one.stages}
    assert sigs(one) == {k: v for k, v in sigs(two).items() if k[3] == 0}  # seed 0 unchanged by adding seed 1
    for key, stage in two.stages.items():
        if key[3] == 1:
            twin = two.stages[key[:3] + (0,)]
            assert stage.sig != twin.sig and "/seed1/" in stage.folder and stage.opts["SEED"] == 1
            # a seed's lineage stays within the seed
            assert not any("/seed0/" in str(i) for i in stage.inputs)
    assert two.clips[0].sig != two.clips[1].sig and "/seed1/" in two.clips[1].folder
    ev = two.evaluation("base-novel", "masqclip", "generalized", 1)
    assert "/seed1/" in ev.path and "/seed1/" in ev.weights and ev.opts["MODEL.MASQ_CLIP.PRETRAINED"] == two.clips[1].weights
    config.pop("seeds")
    config["seed"] = 3  # the single-seed shorthand still works
    assert Plan.from_config(config).seeds == [3]


def test_manifest_is_the_plan_and_round_trips(config, tmp_path):
    from masqclip.manifest import Manifest

    config["seeds"] = [0, 2]
    plan = Plan.from_config(config)
    manifest = plan.manifest()
    assert manifest.seeds == [0, 2]
    assert {(e.setting, e.variant, e.test, e.seed, e.metrics) for e in manifest.evaluations} == \
        {(e.setting, e.variant, e.test, e.seed, e.path) for e in plan.evaluations}
    frozen = next(e for e in manifest.evaluations if e.variant == "frozen-clip" and e.seed == 2)
    assert (frozen.stage, frozen.round) == ("student", 2)  # the model that is evaluated, not the variant
    assert [t.name for t in manifest.tables] == plan.table_names()
    cross = lambda m: next(t for t in m.tables if t.kind == "cross_dataset")  # noqa: E731
    assert cross(manifest).miou_convention == "gt"
    config["miou_convention"] = "d2v06"
    assert cross(Plan.from_config(config).manifest()).miou_convention == "d2v06"
    config.pop("miou_convention")
    assert [f"{plan.results}/plots/{p.name}" for p in manifest.plots] == plan.plot_files()
    assert sorted(manifest.clip_metrics) == [0, 2] and all(p.endswith("tiny.json") for p in manifest.clip_metrics.values())
    assert {c.path for c in manifest.curves} == set(plan.curve_files())
    manifest.write(tmp_path / "m.json")
    assert Manifest.read(tmp_path / "m.json") == manifest
    (tmp_path / "bad.json").write_text("{}")
    from masqclip.errors import UserError

    with pytest.raises(UserError, match="bad.json"):  # one line naming the file, exit 2 from the CLI
        Manifest.read(tmp_path / "bad.json")


def test_given_weights_replace_training_upstream(config, tmp_path):
    ckpt = tmp_path / "released" / "model_final.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"released weights")
    base = Plan.from_config(config)
    spec = config["settings"]["cross-dataset"]
    spec["tuning"]["weights"] = str(ckpt)
    del spec["teacher"], spec["student"]  # nothing upstream of a given checkpoint is needed
    plan = Plan.from_config(config)
    assert not [k for k in plan.stages if k[1] == "cross-dataset" and k[0] != "tuning"]
    final = plan.final_stage("cross-dataset")
    assert not final.trained and final.weights == str(ckpt)
    assert all(e.weights == str(ckpt) for e in plan.evaluations if e.setting == "cross-dataset")
    assert final not in plan.trained_stages()
    with pytest.raises(ValueError, match="plans no tuning training"):
        plan.stage("tuning", "cross-dataset", final.round, final.sig)
    assert sigs(plan).items() >= {k: v for k, v in sigs(base).items() if k[1] == "base-novel"}.items()
    # the file's content, not its name, is the signature
    ckpt.write_bytes(b"other weights")
    assert Plan.from_config(config).final_stage("cross-dataset").sig != final.sig
    # a given teacher: the students train from it and their signatures follow its content
    teacher_file = tmp_path / "teacher.pth"
    teacher_file.write_bytes(b"teacher")
    config["settings"]["base-novel"]["teacher"]["weights"] = str(teacher_file)
    plan = Plan.from_config(config)
    student = plan.stages[("student", "base-novel", 1, 0)]
    assert student.opts["MODEL.WEIGHTS"] == str(teacher_file) and student.trained
    assert not plan.generator("base-novel", 0).trained
    before = student.sig
    teacher_file.write_bytes(b"another teacher")
    assert Plan.from_config(config).stages[("student", "base-novel", 1, 0)].sig != before


@pytest.mark.parametrize("change,message", [
    (lambda c, f: c["settings"]["base-novel"]["tuning"].update(weights=f + ".missing"),
     "settings.base-novel.tuning.weights: no such file"),
    (lambda c, f: c["settings"]["base-novel"]["tuning"].update(weights=f),
     "ablations.rounds: settings.base-novel.tuning.weights is given"),
    (lambda c, f: c["settings"]["cross-dataset"].pop("teacher"), "settings.cross-dataset.teacher: needs a 'config'"),
    (lambda c, f: c.update(seeds=[1, 1]), "seeds: [1, 1] lists a seed twice"),
    (lambda c, f: c["settings"]["cross-dataset"].update(rounds=0, student={"weights": f}),
     "settings.cross-dataset.student.weights: the setting runs no student round"),
])
def test_given_weights_checks_name_the_field(config, tmp_path, change, message):
    ckpt = tmp_path / "model_final.pth"
    ckpt.write_bytes(b"x")
    change(config, str(ckpt))
    with pytest.raises(ValueError, match=re.escape(message)):
        Plan.from_config(config)


def test_checkpoint_hash_is_cached_per_path_and_mtime(tmp_path, monkeypatch):
    import hashlib
    import os

    from masqclip.pipeline.plan import file_sha256, hash_cache_file

    monkeypatch.setenv("MASQCLIP_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    assert file_sha256(str(f)) == hashlib.sha256(b"abc").hexdigest()
    assert hash_cache_file().is_file()
    f.write_bytes(b"abd")  # new content, new mtime: hashed again
    os.utime(f, ns=(1, 2))
    assert file_sha256(str(f)) == hashlib.sha256(b"abd").hexdigest()


@pytest.mark.parametrize("first,other", [("masqclip.pipeline", "masqclip.results"),
                                         ("masqclip.results", "masqclip.pipeline")])
def test_no_import_circle_between_plan_and_results(first, other):
    """The plan and the tables/plots meet only in masqclip.manifest: importing one never imports the other."""
    import subprocess
    import sys

    code = f"import sys, {first}; assert {other!r} not in sys.modules, sorted(sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_plan_command_writes_the_manifest_or_names_the_problem(config, tmp_path):
    import subprocess
    import sys

    import yaml

    from masqclip.manifest import Manifest

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(config))
    config["settings"]["base-novel"]["datasets"] = ["coco-ovsplit"]
    bad.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "masqclip.cli", "plan", "--output", str(tmp_path / "m.json"), "--config"]
    proc = subprocess.run(cmd + [str(good)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Manifest.read(tmp_path / "m.json") == Plan.from_config(yaml.safe_load(good.read_text())).manifest()
    proc = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "settings.base-novel.datasets: 'coco-ovsplit'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_given_last_student_is_tuned_and_nothing_before_it_runs(config, tmp_path):
    student_file = tmp_path / "student.pth"
    student_file.write_bytes(b"student")
    spec = config["settings"]["cross-dataset"]
    spec["student"] = {"weights": str(student_file)}  # no config needed: it is never trained
    del spec["teacher"]
    plan = Plan.from_config(config)
    keys = {k[:3] for k in plan.stages if k[1] == "cross-dataset"}
    assert keys == {("student", "cross-dataset", 1), ("tuning", "cross-dataset", 1)}
    tuning = plan.final_stage("cross-dataset")
    assert tuning.trained and tuning.opts["MODEL.WEIGHTS"] == str(student_file) and str(student_file) in tuning.inputs


def test_one_eval_job_per_evaluated_model(config):
    """Every evaluation in exactly one job; a job evaluates one weights file of one setting and seed;
    its spec is what ``masqclip eval --spec`` reads, item for item the single-evaluation command."""
    import json

    from masqclip.commands.eval import parse_spec
    from masqclip.config import setup_cfg

    config["seeds"] = [0, 1]
    plan = Plan.from_config(config)
    jobs = plan.eval_jobs()
    assert sorted(e.path for j in jobs for e in j.evaluations) == sorted(e.path for e in plan.evaluations)
    assert len({j.name for j in jobs}) == len(jobs) == 12  # per seed: 6 models, 11 evaluations
    assert all(re.fullmatch(r"evaluate_[a-z_]+_seed\d_[a-z]+\d", j.name) for j in jobs)
    for job in jobs:
        assert {(e.setting, e.seed, e.weights) for e in job.evaluations} == {(job.setting, job.seed, job.weights)}
        assert job.outputs == [e.path for e in job.evaluations]
        assert set(job.inputs) == {i for e in job.evaluations for i in e.inputs}
        items = parse_spec(job.spec())
        for item, ev in zip(items, job.evaluations, strict=True):
            assert (item["config_file"], item["dataset"], item["output"]) == (ev.config, ev.dataset, ev.path)
            assert item["opts"][:2] == ["MODEL.WEIGHTS", ev.weights]
            assert item["opts"][2:] == shlex.split(format_opts(ev.opts))  # the same KEY VALUE tokens as one eval
            assert item["tags"] == {"setting": ev.setting, "stage": ev.stage, "round": str(ev.round),
                                    "seed": str(ev.seed), "variant": ev.variant, "test": ev.test,
                                    "dataset": ev.dataset}
            setup_cfg(item["config_file"], item["opts"])  # loads as the job will
        assert json.loads(job.spec()) == items
    final = next(j for j in jobs if j.name == "evaluate_base_novel_seed1_tuning2")
    assert [(e.variant, e.test) for e in final.evaluations] == [
        ("masqclip", "constrained_base"), ("masqclip", "constrained_novel"), ("masqclip", "generalized"),
        ("no-objscore", "generalized")]
    student = next(j for j in jobs if j.name == "evaluate_base_novel_seed0_student2")
    assert {e.variant for e in student.evaluations} == {"frozen-clip", "proposals-r2"}  # one weights file, two configs
