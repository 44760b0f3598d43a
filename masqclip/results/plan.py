"""The job plan of a pipeline config: which models are trained, which evaluations run, where every
file goes. The Snakemake rules (``workflow/rules/*.smk``) only look things up here, so the plan is
unit-testable without Snakemake.

Every trained model lives in a folder named by a **signature**: a short hash of everything that
decides its weights (its model YAML with ``_BASE_`` files merged, its overrides, the seed, and the
signatures of the models and data it starts from). Changing a stage's config therefore gives it a
new folder: only that stage and what depends on it re-run, its ``--resume`` never picks up
checkpoints of a different config, and the old (protected) checkpoints are never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

SIG_LENGTH = 10
# Test roles per setting; they decide which table cell an evaluation fills.
BASE_NOVEL_TESTS = ("constrained_base", "constrained_novel", "generalized")
CROSS_DATASET_TESTS = ("ade150_panoptic", "ade150", "ade847", "pc59", "pc459")
MAIN_VARIANT = "masqclip"
NO_OBJECT_SCORE = "no-objscore"
FROZEN_CLIP = "frozen-clip"
CONTROL_PROPOSALS = "proposals-control"
# Eval jobs reuse the model-defining overrides of the stage they evaluate, not its solver ones.
MODEL_KEY_PREFIXES = ("MODEL.", "INPUT.")


def signature(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:SIG_LENGTH]


def format_value(value: Any) -> str:
    """A config value as a detectron2 ``KEY VALUE`` command-line token (read back by literal_eval)."""
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value)


def format_opts(opts: dict[str, Any]) -> str:
    """``{"A.B": 1, "C": "x y"}`` -> ``A.B 1 C 'x y'`` (shell-quoted, in the given order)."""
    return " ".join(f"{shlex.quote(k)} {shlex.quote(format_value(v))}" for k, v in opts.items())


def flags(args: dict[str, Any]) -> str:
    """``{"num-train": 8, "fast": True}`` -> ``--num-train 8 --fast`` (False/None dropped; names and
    values shell-quoted)."""
    out = []
    for key, value in args.items():
        if value is True:
            out.append(shlex.quote(f"--{key}"))
        elif value not in (False, None):
            out.append(f"{shlex.quote(f'--{key}')} {shlex.quote(str(value))}")
    return " ".join(out)


def model_config_content(path: str) -> dict:
    """The YAML at ``path`` with its ``_BASE_`` chain merged (what a signature hashes)."""
    from ..config import load_yaml_with_base

    return load_yaml_with_base(path)


@dataclass(frozen=True)
class Stage:
    """One trained model. ``kind``: clip | teacher | student | tuning | control (round 1's student
    schedule without the teacher's pseudo-labels: the rounds ablation's control)."""

    kind: str
    setting: str
    round: int
    config: str
    overrides: dict = field(hash=False)
    sig: str
    folder: str
    inputs: tuple = ()  # checkpoints / done-files this stage starts from
    opts: dict = field(default_factory=dict, hash=False)  # KEY VALUE pairs besides overrides

    @property
    def weights(self) -> str:
        return f"{self.folder}/tiny.pt" if self.kind == "clip" else f"{self.folder}/model_final.pth"

    @property
    def model_overrides(self) -> dict:
        return {k: v for k, v in self.overrides.items() if k.startswith(MODEL_KEY_PREFIXES)}

    def command_opts(self) -> str:
        return format_opts({**self.overrides, **self.opts})


@dataclass(frozen=True)
class Evaluation:
    """One ``masqclip eval`` job: a model variant on one test set."""

    setting: str
    variant: str
    test: str
    dataset: str
    config: str
    weights: str
    opts: dict = field(hash=False)
    inputs: tuple = ()
    path: str = ""

    @property
    def config_sig(self) -> str:
        return signature(model_config_content(self.config))


class Plan:
    """Everything a validated pipeline config asks for. Build with :meth:`from_config`."""

    def __init__(self, *, config: dict, check_model_configs: bool = False):
        self.config = config
        self.results = config["results"].rstrip("/")
        self.data_root = config["data_root"].rstrip("/")
        self.rounds = int(config["rounds"])
        self.seed = int(config["seed"])
        self.settings = list(config["settings"])
        self.datasets = dict(config["datasets"])
        self._check_references()
        self.clip = self._clip_stage()
        self.stages: dict[tuple, Stage] = {}  # (kind, setting, round): every trained stage but the CLIP
        for setting in self.settings:
            self._plan_setting(setting)
        self.evaluations = [e for s in self.settings for e in self._plan_evaluations(s)]
        if check_model_configs:
            self.check_model_configs()

    @classmethod
    def from_config(cls, config: dict, *, check_model_configs: bool = False) -> "Plan":
        return cls(config=config, check_model_configs=check_model_configs)

    def _check_references(self) -> None:
        """Cross-field checks the JSON schema cannot express; errors name the field."""
        problems = []
        for setting in self.settings:
            spec = self.config["settings"][setting]
            problems += [f"settings.{setting}.datasets: {d!r} is not listed under 'datasets'"
                         for d in spec["datasets"] if d not in self.datasets]
        clip = self.config.get("clip")
        if clip and clip["dataset"] not in self.datasets:
            problems.append(f"clip.dataset: {clip['dataset']!r} is not listed under 'datasets'")
        for kind, spec in self.config.get("ablations", {}).items():
            for setting in spec.get("settings", []):
                if setting not in self.settings:
                    problems.append(f"ablations.{kind}.settings: {setting!r} is not under 'settings'")
                    continue
                tests = self.config["settings"][setting]["tests"]
                wanted = spec.get("tests", []) + ([spec["test"]] if "test" in spec else [])
                problems += [f"ablations.{kind}: test {t!r} is not under settings.{setting}.tests"
                             for t in wanted if t not in tests]
                if kind == "rounds" and "proposals" not in self.config["settings"][setting]:
                    problems.append(f"ablations.rounds needs settings.{setting}.proposals (class-agnostic recall)")
                if kind == "rounds" and spec.get("control") and self.rounds_of(setting) < 1:
                    problems.append(f"ablations.rounds.control: settings.{setting} runs no student round to "
                                    "compare the control with (rounds < 1)")
                if kind == "rounds" and self.rounds_of(setting) != self.rounds:
                    problems.append(f"ablations.rounds: settings.{setting}.rounds must equal the top-level 'rounds' "
                                    f"({self.rounds}), which the rounds table and plot use")
        for setting in self.config.get("qualitative", {}):
            if setting not in self.settings:
                problems.append(f"qualitative: {setting!r} is not under 'settings'")
        if problems:
            raise ValueError("invalid pipeline config:\n  " + "\n  ".join(problems))

    def rounds_of(self, setting: str) -> int:
        """Distillation rounds of ``setting``: its own ``rounds``, else the top-level one."""
        return int(self.config["settings"][setting].get("rounds", self.rounds))

    # ----------------------------------------------------------------------------- datasets
    def prepared(self, dataset: str) -> str:
        """Done-file that ``masqclip prepare <dataset>`` leaves when it finished."""
        return f"{self.data_root}/.prepared/{dataset}.done"

    def prepare_args(self, dataset: str) -> str:
        """Arguments of ``masqclip prepare <dataset>``; the synthetic world also gets ``--output``."""
        args = dict(self.datasets[dataset].get("args", {}))
        if dataset == "synthetic":
            args = {"output": self.data_root, **args}
        return flags(args)

    # ----------------------------------------------------------------------------- models
    def _clip_stage(self) -> Stage | None:
        spec = self.config.get("clip")
        if not spec:
            return None
        dataset = spec["dataset"]
        sig = signature("clip", spec, self.seed, self.datasets[dataset])
        folder = f"{self.results}/models/clip/{sig}"
        return Stage(kind="clip", setting="", round=0, config="", overrides={}, sig=sig, folder=folder,
                     inputs=(self.prepared(dataset),))

    def _plan_setting(self, setting: str) -> None:
        spec = self.config["settings"][setting]
        data = {d: self.datasets[d] for d in spec["datasets"]}
        prepared = tuple(self.prepared(d) for d in spec["datasets"])
        parent = None
        for rnd in range(self.rounds_of(setting) + 1):
            kind = "teacher" if rnd == 0 else "student"
            stage_spec = spec[kind]
            overrides = dict(stage_spec.get("overrides", {}))
            lineage = data if parent is None else parent.sig
            sig = signature(kind, model_config_content(stage_spec["config"]), overrides, self.seed, lineage)
            name = "teacher" if rnd == 0 else f"student{rnd}"
            opts = {"SEED": self.seed}
            inputs = prepared
            if parent is not None:
                opts.update({"MODEL.WEIGHTS": parent.weights, "MODEL.DISTILL.TEACHER_WEIGHTS": parent.weights})
                inputs = prepared + (parent.weights,)
            stage = Stage(kind=kind, setting=setting, round=rnd, config=stage_spec["config"], overrides=overrides,
                          sig=sig, folder=f"{self.results}/models/{setting}/{name}-{sig}", inputs=inputs, opts=opts)
            self.stages[(kind, setting, rnd)] = stage
            if rnd == 1 and (self.rounds_ablation(setting) or {}).get("control", False):
                self._plan_control(setting, stage_spec, parent, prepared)
            parent = stage
        for rnd in self.tuned_rounds(setting):
            generator = self.generator(setting, rnd)
            stage_spec = spec["tuning"]
            overrides = dict(stage_spec.get("overrides", {}))
            clip_sig = self.clip.sig if self.clip else None
            sig = signature("tuning", model_config_content(stage_spec["config"]), overrides, self.seed,
                            generator.sig, clip_sig)
            opts = {"SEED": self.seed, "MODEL.WEIGHTS": generator.weights, **self.clip_opts()}
            inputs = prepared + (generator.weights,) + ((self.clip.weights,) if self.clip else ())
            self.stages[("tuning", setting, rnd)] = Stage(
                kind="tuning", setting=setting, round=rnd, config=stage_spec["config"], overrides=overrides, sig=sig,
                folder=f"{self.results}/models/{setting}/masqclip-r{rnd}-{sig}", inputs=inputs, opts=opts)

    def rounds_ablation(self, setting: str) -> dict | None:
        """The rounds ablation's spec when it covers ``setting``, else None."""
        spec = self.config.get("ablations", {}).get("rounds", {})
        return spec if setting in spec.get("settings", []) else None

    def _plan_control(self, setting: str, student_spec: dict, teacher: Stage, prepared: tuple) -> None:
        """Round 1's student config and schedule, started from the teacher, trained on the ground truth
        alone (plain Mask2Former loss, no teacher): separates what the pseudo-labels do from what
        more training does."""
        overrides = {**student_spec.get("overrides", {}), "MODEL.META_ARCHITECTURE": "MaskFormer"}
        sig = signature("control", model_config_content(student_spec["config"]), overrides, self.seed, teacher.sig)
        self.stages[("control", setting, 1)] = Stage(
            kind="control", setting=setting, round=1, config=student_spec["config"], overrides=overrides, sig=sig,
            folder=f"{self.results}/models/{setting}/control1-{sig}", inputs=prepared + (teacher.weights,),
            opts={"SEED": self.seed, "MODEL.WEIGHTS": teacher.weights})

    def clip_opts(self) -> dict:
        return {"MODEL.MASQ_CLIP.PRETRAINED": self.clip.weights} if self.clip else {}

    def tuned_rounds(self, setting: str) -> list[int]:
        """Rounds whose mask generator gets MasQ-Tuned: the last, plus all when the rounds ablation asks."""
        rounds_ablation = self.rounds_ablation(setting)
        if rounds_ablation is not None and rounds_ablation.get("tune", True):
            return list(range(self.rounds_of(setting) + 1))
        return [self.rounds_of(setting)]

    def final_stage(self, setting: str) -> Stage:
        """The MasQ-Tuning of ``setting``'s last round: the model its tables report."""
        return self.stages[("tuning", setting, self.rounds_of(setting))]

    def generator(self, setting: str, rnd: int) -> Stage:
        """The mask generator of round ``rnd``: the teacher (0) or student ``rnd``."""
        return self.stages[("teacher" if rnd == 0 else "student", setting, rnd)]

    def stage(self, kind: str, setting: str, rnd: int, sig: str | None = None) -> Stage:
        """Look a stage up; ``sig`` (from a path) must be the current config's signature."""
        if kind == "clip":
            stage = self.clip
        else:
            stage = self.stages.get((kind, setting, rnd))
        if stage is None:
            raise ValueError(f"the config plans no {kind} for setting {setting!r}, round {rnd}")
        if sig is not None and sig != stage.sig:
            raise ValueError(f"{kind} {setting!r} round {rnd}: path signature {sig} is not the current "
                             f"config's ({stage.sig}); request the targets of the current config instead")
        return stage

    def stages_of(self, kind: str) -> list[Stage]:
        if kind == "clip":
            return [self.clip] if self.clip else []
        return [s for (k, _, _), s in self.stages.items() if k == kind]

    # ----------------------------------------------------------------------------- evaluations
    def metrics_path(self, setting: str, variant: str, test: str) -> str:
        return f"{self.results}/metrics/{setting}/{variant}/{test}.json"

    def _evaluation(self, setting, variant, test, *, stage: Stage, config: str | None = None, extra=None,
                    overrides_from: Stage | None = None):
        """``stage``'s weights on test ``test``; model overrides come from ``overrides_from`` (default ``stage``)."""
        spec = self.config["settings"][setting]
        test_spec = spec["tests"][test] if test != "proposals" else spec["proposals"]
        model_overrides = (overrides_from or stage).model_overrides
        # The model's test vocabulary follows DATASETS.TEST; each job writes under its own OUTPUT_DIR.
        opts = {**model_overrides, "DATASETS.TEST": [test_spec["dataset"]],
                "OUTPUT_DIR": f"{self.results}/eval/{setting}/{variant}/{test}",
                **test_spec.get("overrides", {}), **(extra or {})}
        uses_clip = stage.kind == "tuning" or overrides_from is not None  # proposals need no CLIP
        if uses_clip:
            opts.update(self.clip_opts())
        inputs = (stage.weights,) + ((self.clip.weights,) if self.clip and uses_clip else ())
        inputs += tuple(self.prepared(d) for d in spec["datasets"])
        return Evaluation(setting=setting, variant=variant, test=test, dataset=test_spec["dataset"],
                          config=config or test_spec.get("config") or spec["tuning"]["config"],
                          weights=stage.weights, opts=opts, inputs=tuple(dict.fromkeys(inputs)),
                          path=self.metrics_path(setting, variant, test))

    def _plan_evaluations(self, setting: str) -> list[Evaluation]:
        spec = self.config["settings"][setting]
        ablations = self.config.get("ablations", {})
        final = self.final_stage(setting)
        evals = [self._evaluation(setting, MAIN_VARIANT, t, stage=final) for t in spec["tests"]]
        obj = ablations.get("object_score", {})
        if setting in obj.get("settings", []):
            evals += [self._evaluation(setting, NO_OBJECT_SCORE, t, stage=final,
                                       extra={"MODEL.MASQ_CLIP.USE_OBJECT_SCORE": False}) for t in obj["tests"]]
        frozen = ablations.get("frozen_clip", {})
        if setting in frozen.get("settings", []):
            generator = self.generator(setting, final.round)
            evals += [self._evaluation(setting, FROZEN_CLIP, t, stage=generator, overrides_from=final,
                                       extra={"MODEL.MASQ_CLIP.TUNING": False}) for t in frozen["tests"]]
        rounds = self.rounds_ablation(setting)
        if rounds is not None:
            for rnd in range(self.rounds + 1):
                generator = self.generator(setting, rnd)
                evals.append(self._evaluation(setting, f"proposals-r{rnd}", "proposals", stage=generator,
                                              config=generator.config))
                if rnd == 1 and ("control", setting, 1) in self.stages:
                    control = self.stages[("control", setting, 1)]
                    evals.append(self._evaluation(setting, CONTROL_PROPOSALS, "proposals", stage=control,
                                                  config=control.config))
                if rnd < self.rounds and ("tuning", setting, rnd) in self.stages:
                    evals.append(self._evaluation(setting, f"round{rnd}", rounds["test"],
                                                  stage=self.stages[("tuning", setting, rnd)]))
        return evals

    def evaluation(self, setting: str, variant: str, test: str) -> Evaluation:
        for ev in self.evaluations:
            if (ev.setting, ev.variant, ev.test) == (setting, variant, test):
                return ev
        raise ValueError(f"the config plans no evaluation {setting}/{variant}/{test}")

    # ----------------------------------------------------------------------------- outputs
    def table_names(self) -> list[str]:
        from .tables import planned_tables

        return planned_tables(self.settings, self.config.get("ablations", {}))

    def table_files(self) -> list[str]:
        return [f"{self.results}/tables/{n}.{ext}" for n in self.table_names() for ext in ("md", "tex", "csv", "html")]

    def plot_files(self) -> list[str]:
        from .plots import planned_plots

        return [f"{self.results}/plots/{n}" for n in planned_plots(self.settings, self.clip is not None)]

    def qualitative_files(self) -> list[str]:
        spec = self.config.get("qualitative", {})
        return [f"{self.results}/plots/qualitative/{s}/{i}.png"
                for s, images in spec.items() if s in self.settings for i in range(len(images))]

    def qualitative_opts(self, setting: str) -> dict:
        """Overrides of ``masqclip predict`` for a setting's final model: its model overrides, the
        small CLIP, and the vocabulary of the setting's first test set."""
        final = self.final_stage(setting)
        first_test = next(iter(self.config["settings"][setting]["tests"].values()))
        return {**final.model_overrides, **self.clip_opts(), "DATASETS.TEST": [first_test["dataset"]]}

    def final_targets(self) -> list[str]:
        return self.table_files() + self.plot_files() + self.qualitative_files()

    def resources(self, stage: str) -> dict:
        """``resources.default`` updated by ``resources.<stage>``; the control trains like a student."""
        table = self.config.get("resources", {})
        if stage == "control" and stage not in table:
            stage = "student"
        return {**table.get("default", {}), **table.get(stage, {})}

    # ----------------------------------------------------------------------------- checks
    def check_model_configs(self) -> None:
        """Load every (model config, overrides) pair through masqclip's config system: an unknown key
        or a wrong type raises ``ConfigError`` naming the key and the file, before any job runs."""
        from ..config import setup_cfg

        seen = set()
        pairs = [(s.config, s.command_opts()) for s in self.stages.values()]  # every trained stage but the CLIP
        pairs += [(e.config, format_opts(e.opts)) for e in self.evaluations]
        for cfg_file, opts in pairs:
            if (cfg_file, opts) in seen:
                continue
            seen.add((cfg_file, opts))
            setup_cfg(cfg_file, shlex.split(opts))
