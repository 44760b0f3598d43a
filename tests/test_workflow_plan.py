"""The job plan behind the rules (masqclip/results/plan.py): signatures change exactly where a
config change must re-train, the lineage of rounds, and each evaluation variant's overrides."""
from __future__ import annotations

import copy
import shlex

import pytest

from masqclip.config import ConfigError
from masqclip.results.plan import Plan, flags, format_opts
from workflow_support import load_config, with_model_dir, write_model_configs


@pytest.fixture
def config(tmp_path):
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
            student = plan.stages[("student", setting, rnd)]
            parent = plan.generator(setting, rnd - 1).weights
            assert student.opts["MODEL.WEIGHTS"] == student.opts["MODEL.DISTILL.TEACHER_WEIGHTS"] == parent
            assert parent in student.inputs
    assert plan.rounds_of("base-novel") == 2 and plan.rounds_of("cross-dataset") == 1  # the embedded default
    assert plan.tuned_rounds("base-novel") == [0, 1, 2] and plan.tuned_rounds("cross-dataset") == [1]
    assert plan.stages[("tuning", "base-novel", 2)].opts["MODEL.MASQ_CLIP.PRETRAINED"] == plan.clip.weights


def test_tuning_change_touches_only_tuning_signatures(config):
    config["ablations"]["rounds"]["tune"] = True
    before = sigs(Plan.from_config(config))
    after = sigs(changed(config, "base-novel", "tuning", {"SOLVER.BASE_LR": 0.001}))
    diff = {k for k in before if before[k] != after[k]}
    assert diff == {("tuning", "base-novel", r) for r in range(3)}


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
    final = plan.stages[("tuning", "base-novel", 2)]
    no_obj = plan.evaluation("base-novel", "no-objscore", "generalized")
    assert no_obj.weights == final.weights and no_obj.opts["MODEL.MASQ_CLIP.USE_OBJECT_SCORE"] is False
    frozen = plan.evaluation("base-novel", "frozen-clip", "generalized")
    assert frozen.weights == plan.generator("base-novel", 2).weights  # no MasQ-Tuning needed
    assert frozen.opts["MODEL.MASQ_CLIP.TUNING"] is False and frozen.config == final.config
    props = plan.evaluation("base-novel", "proposals-r1", "proposals")
    assert props.config == plan.generator("base-novel", 1).config and "MODEL.MASQ_CLIP.PRETRAINED" not in props.opts
    novel = plan.evaluation("base-novel", "masqclip", "constrained_novel")
    assert novel.opts["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD"] == 0.5
    assert novel.path.endswith("metrics/base-novel/masqclip/constrained_novel.json")
    with pytest.raises(ValueError, match="no evaluation"):
        plan.evaluation("cross-dataset", "frozen-clip", "ade150")


def test_a_setting_may_run_fewer_rounds(config):
    config["rounds"], config["ablations"]["rounds"]["tune"] = 2, False
    config["settings"]["cross-dataset"]["rounds"] = 1
    plan = Plan.from_config(config)
    assert plan.rounds_of("cross-dataset") == 1 and plan.rounds_of("base-novel") == 2
    assert ("student", "cross-dataset", 1) in plan.stages and ("student", "cross-dataset", 2) not in plan.stages
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
    control, student = plan.stages[("control", "base-novel", 1)], plan.stages[("student", "base-novel", 1)]
    teacher = plan.generator("base-novel", 0)
    assert control.config == student.config and control.opts["MODEL.WEIGHTS"] == teacher.weights
    assert "MODEL.DISTILL.TEACHER_WEIGHTS" not in control.opts  # no teacher: plain Mask2Former loss
    assert control.overrides["MODEL.META_ARCHITECTURE"] == "MaskFormer" and teacher.weights in control.inputs
    assert control.folder.rsplit("/", 1)[1] == f"control1-{control.sig}" and control.sig != student.sig
    props = plan.evaluation("base-novel", "proposals-control", "proposals")
    assert props.weights == control.weights and props.opts["MODEL.META_ARCHITECTURE"] == "MaskFormer"
    assert ("control", "cross-dataset", 1) not in plan.stages  # only the rounds ablation's settings
    assert plan.resources("control") == plan.resources("student")
    # it follows the student's config and the teacher: a student change re-trains it, a tuning change does not
    assert changed(config, "base-novel", "student", {"SOLVER.MAX_ITER": 9}).stages[("control", "base-novel", 1)].sig \
        != control.sig
    assert changed(config, "base-novel", "tuning", {"SOLVER.MAX_ITER": 9}).stages[("control", "base-novel", 1)].sig \
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
