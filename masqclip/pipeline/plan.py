"""The job plan of a pipeline config: which models are trained (per seed), which evaluations run,
which tables and plots are drawn, where every file goes. The Snakemake rules (``workflow/rules/*.smk``)
only look things up here, so the plan is unit-testable without Snakemake; tables and plots learn
the plan only from the manifest it writes (``masqclip.manifest``).

Every trained model lives in a folder named by its seed and a **signature**: a short hash of
everything that decides its weights (its model YAML with ``_BASE_`` files merged, its overrides, the
seed, the signatures of the models and data it starts from, the synthetic world's version when the
data is generated, and ``masqclip.BEHAVIOUR_VERSION``, the version of the code's training and data
semantics). Changing any of them gives a new folder: only that stage and what depends on it re-run,
its ``--resume`` never picks up checkpoints of a different config, the old (protected) checkpoints
are never overwritten, and a cache shared between checkouts never hands a model trained by older
semantics to newer code. A stage given ``weights`` (a released checkpoint) is not trained: the
file's content hash is its signature, and nothing upstream of it runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import masqclip

from ..manifest import (CONTROL_PROPOSALS, FROZEN_CLIP, MAIN_VARIANT, NO_OBJECT_SCORE, PROPOSALS_TEST, CurveEntry,
                        EvaluationEntry, Manifest, PlotSpec, TableSpec, proposals_variant, round_variant)

SIG_LENGTH = 10
# Test roles per setting; they decide which table cell an evaluation fills.
BASE_NOVEL_TESTS = ("constrained_base", "constrained_novel", "generalized")
CROSS_DATASET_TESTS = ("ade150_panoptic", "ade150", "ade847", "pc59", "pc459")
# Eval jobs reuse the model-defining overrides of the stage they evaluate, not its solver ones.
MODEL_KEY_PREFIXES = ("MODEL.", "INPUT.")
# Folder of each trained stage under results/models/<setting>/seed<seed>/ (the rules' output patterns).
STAGE_FOLDERS = {"teacher": "teacher-{sig}", "student": "student{round}-{sig}", "control": "control{round}-{sig}",
                 "tuning": "tuning-r{round}-{sig}"}
TRAINED_KINDS = tuple(STAGE_FOLDERS)  # every trained stage but the small CLIP
HASH_CACHE_NAME = "weights-sha256.json"


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


_CONTENT_CACHE: dict[str, dict] = {}  # path -> merged YAML; emptied when a Plan is built


def model_config_content(path: str) -> dict:
    """The YAML at ``path`` with its ``_BASE_`` chain merged (what a signature hashes); read once per
    plan (a Snakemake start asks for the same few files dozens of times)."""
    import copy

    from ..config import load_yaml_with_base

    if path not in _CONTENT_CACHE:
        _CONTENT_CACHE[path] = load_yaml_with_base(path)
    return copy.deepcopy(_CONTENT_CACHE[path])


def hash_cache_file() -> Path:
    """``$MASQCLIP_CACHE/weights-sha256.json``, else ``~/.cache/masqclip/weights-sha256.json``."""
    root = os.environ.get("MASQCLIP_CACHE") or "~/.cache/masqclip"
    return Path(root).expanduser() / HASH_CACHE_NAME


def file_sha256(path: str) -> str:
    """SHA-256 of a file's content, remembered per (absolute path, size, mtime) so that large
    checkpoints are read once, not on every Snakemake start."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = hash_cache_file()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:  # best effort: a read-only home only costs the re-hash
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True), encoding="utf-8")
        tmp.replace(cache_file)
    except OSError:
        pass
    return cache[key]


def synthetic_world_version() -> int:
    from ..data.synthetic.world import WORLD_VERSION

    return WORLD_VERSION


@dataclass(frozen=True)
class Stage:
    """One trained model. ``kind``: clip | teacher | student | tuning | control (round 1's student
    schedule without the teacher's pseudo-labels: the rounds ablation's control). ``given``: a
    checkpoint file that replaces training (its content hash is the signature)."""

    kind: str
    setting: str
    round: int
    config: str
    overrides: dict = field(hash=False)
    sig: str
    folder: str
    inputs: tuple = ()  # checkpoints / done-files this stage starts from
    opts: dict = field(default_factory=dict, hash=False)  # KEY VALUE pairs besides overrides
    seed: int = 0
    given: str = ""

    @property
    def weights(self) -> str:
        if self.given:
            return self.given
        return f"{self.folder}/tiny.pt" if self.kind == "clip" else f"{self.folder}/model_final.pth"

    @property
    def trained(self) -> bool:
        return not self.given

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
    seed: int = 0
    stage: str = ""
    round: int = 0

    @property
    def config_sig(self) -> str:
        return signature(model_config_content(self.config))

    def entry(self) -> EvaluationEntry:
        return EvaluationEntry(setting=self.setting, stage=self.stage, round=self.round, seed=self.seed,
                               variant=self.variant, test=self.test, dataset=self.dataset, metrics=self.path)

    def spec(self) -> dict:
        """This evaluation as one item of ``masqclip eval --spec``: config, test set, metrics file, its
        ``KEY VALUE`` overrides (``MODEL.WEIGHTS`` first) and its MLflow tags."""
        opts = ["MODEL.WEIGHTS", self.weights]
        for key, value in self.opts.items():
            opts += [key, format_value(value)]
        tags = {"setting": self.setting, "stage": self.stage, "round": str(self.round), "seed": str(self.seed),
                "variant": self.variant, "test": self.test, "dataset": self.dataset}
        return {"config_file": self.config, "dataset": self.dataset, "output": self.path, "opts": opts, "tags": tags}


@dataclass(frozen=True)
class EvalJob:
    """One ``masqclip eval --spec`` job: every planned evaluation of one trained model (setting, seed,
    weights file), so that process start-up and the model build are paid once per model."""

    setting: str
    seed: int
    model: str  # the evaluated stage and round, e.g. "tuning2", "student1", "control1"
    evaluations: tuple

    @property
    def name(self) -> str:
        """The job's rule name: ``evaluate_<setting>_seed<seed>_<model>`` (letters, digits, '_')."""
        return "_".join(["evaluate", self.setting.replace("-", "_"), f"seed{self.seed}", self.model])

    @property
    def weights(self) -> str:
        return self.evaluations[0].weights

    @property
    def outputs(self) -> list[str]:
        return [e.path for e in self.evaluations]

    @property
    def configs(self) -> list[str]:
        return list(dict.fromkeys(e.config for e in self.evaluations))

    @property
    def inputs(self) -> list[str]:
        return list(dict.fromkeys(i for e in self.evaluations for i in e.inputs))

    @property
    def config_sigs(self) -> list[str]:
        return [e.config_sig for e in self.evaluations]

    def spec(self) -> str:
        """The JSON list ``masqclip eval --spec`` reads (one item per evaluation, plan order)."""
        return json.dumps([e.spec() for e in self.evaluations], sort_keys=True)


class Plan:
    """Everything a validated pipeline config asks for. Build with :meth:`from_config`."""

    def __init__(self, *, config: dict, check_model_configs: bool = False):
        _CONTENT_CACHE.clear()  # each plan reads the model YAMLs as they are now
        self.config = config
        self.results = config["results"].rstrip("/")
        self.data_root = config["data_root"].rstrip("/")
        self.rounds = int(config["rounds"])
        self.seeds = [int(s) for s in (config.get("seeds") or [config.get("seed", 0)])]
        self.seed = self.seeds[0]  # the seed of the qualitative figures
        self.settings = list(config["settings"])
        self.datasets = dict(config["datasets"])
        self.behaviour_version = int(masqclip.BEHAVIOUR_VERSION)
        self._check_references()
        self.clips = {seed: self._clip_stage(seed) for seed in self.seeds}
        self.clip = self.clips[self.seed]
        self.stages: dict[tuple, Stage] = {}  # (kind, setting, round, seed): every trained stage but the CLIP
        for seed in self.seeds:
            for setting in self.settings:
                self._plan_setting(setting, seed)
        self.evaluations = [e for seed in self.seeds for s in self.settings for e in self._plan_evaluations(s, seed)]
        if check_model_configs:
            self.check_model_configs()

    @classmethod
    def from_config(cls, config: dict, *, check_model_configs: bool = False) -> "Plan":
        return cls(config=config, check_model_configs=check_model_configs)

    def _check_references(self) -> None:
        """Cross-field checks the JSON schema cannot express; errors name the field."""
        problems = []
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {self.seeds} lists a seed twice")
        for setting in self.settings:
            spec = self.config["settings"][setting]
            problems += [f"settings.{setting}.datasets: {d!r} is not listed under 'datasets'"
                         for d in spec["datasets"] if d not in self.datasets]
            problems += self._check_given(setting)
        clip = self.config.get("clip")
        if clip and not clip.get("weights") and clip.get("dataset") not in self.datasets:
            problems.append(f"clip.dataset: {clip.get('dataset')!r} is not listed under 'datasets' "
                            "(or give clip.weights)")
        for kind, spec in self.config.get("ablations", {}).items():
            for setting in spec.get("settings", []):
                if setting not in self.settings:
                    problems.append(f"ablations.{kind}.settings: {setting!r} is not under 'settings'")
                    continue
                tests = self.config["settings"][setting]["tests"]
                wanted = spec.get("tests", []) + ([spec["test"]] if "test" in spec else [])
                problems += [f"ablations.{kind}: test {t!r} is not under settings.{setting}.tests"
                             for t in wanted if t not in tests]
                given = self.given_from(setting)
                if kind == "rounds" and given in ("student", "tuning"):
                    problems.append(f"ablations.rounds: settings.{setting}.{given}.weights is given, so the "
                                    "earlier rounds it compares are never trained")
                if kind == "frozen_clip" and given == "tuning":
                    problems.append(f"ablations.frozen_clip: settings.{setting}.tuning.weights is given, so there "
                                    "is no mask generator of its own to evaluate with frozen CLIP")
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

    def _check_given(self, setting: str) -> list[str]:
        """Given checkpoints exist; the stages upstream of the latest given one may be left out, the
        others need a ``config``."""
        spec = self.config["settings"][setting]
        problems = []
        for kind in ("teacher", "student", "tuning"):
            path = spec.get(kind, {}).get("weights")
            if path and not os.path.isfile(path):
                problems.append(f"settings.{setting}.{kind}.weights: no such file {path!r}")
        given = self.given_from(setting)
        if given == "student" and self.rounds_of(setting) < 1:
            problems.append(f"settings.{setting}.student.weights: the setting runs no student round (rounds 0)")
        needed = {"tuning": ("tuning",), "student": ("tuning",), "teacher": ("student", "tuning"),
                  None: ("teacher", "student", "tuning")}[given]
        for kind in needed:
            if not spec.get(kind, {}).get("config"):
                problems.append(f"settings.{setting}.{kind}: needs a 'config' (the model YAML)"
                                + ("" if kind == "tuning" else f", or give the weights of a later stage"))
        return problems

    def given_from(self, setting: str) -> str | None:
        """The latest stage of ``setting`` with given ``weights`` (tuning > student > teacher), else None."""
        spec = self.config["settings"][setting]
        return next((k for k in ("tuning", "student", "teacher") if spec.get(k, {}).get("weights")), None)

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

    def data_identity(self, dataset: str) -> dict:
        """What decides a prepared dataset's content: its arguments and, for the generated world, its
        version (part of every model signature; the prepare rule re-runs when it changes)."""
        identity = {"args": self.datasets[dataset].get("args", {})}  # not 'check': it never changes the data
        if dataset == "synthetic":
            identity["world_version"] = synthetic_world_version()
        return identity

    # ----------------------------------------------------------------------------- models
    def _given_stage(self, kind: str, setting: str, rnd: int, seed: int, path: str, config: str = "",
                     overrides: dict | None = None) -> Stage:
        sig = signature("given", file_sha256(path))
        return Stage(kind=kind, setting=setting, round=rnd, config=config, overrides=dict(overrides or {}), sig=sig,
                     folder=os.path.dirname(path) or ".", seed=seed, given=path)

    def _clip_stage(self, seed: int) -> Stage | None:
        spec = self.config.get("clip")
        if not spec:
            return None
        if spec.get("weights"):
            return self._given_stage("clip", "", 0, seed, spec["weights"])
        dataset = spec["dataset"]
        sig = signature("clip", spec, seed, self.data_identity(dataset), self.behaviour_version)
        folder = f"{self.results}/models/clip/seed{seed}/{sig}"
        return Stage(kind="clip", setting="", round=0, config="", overrides={}, sig=sig, folder=folder,
                     inputs=(self.prepared(dataset),), seed=seed)

    def _folder(self, kind: str, setting: str, rnd: int, seed: int, sig: str) -> str:
        return f"{self.results}/models/{setting}/seed{seed}/" + STAGE_FOLDERS[kind].format(round=rnd, sig=sig)

    def _plan_setting(self, setting: str, seed: int) -> None:
        spec = self.config["settings"][setting]
        data = {d: self.data_identity(d) for d in spec["datasets"]}
        prepared = tuple(self.prepared(d) for d in spec["datasets"])
        given = self.given_from(setting)
        rounds = self.rounds_of(setting)
        parent = None
        first_round = {None: 0, "teacher": 0, "student": rounds, "tuning": rounds + 1}[given]
        for rnd in range(first_round, rounds + 1):
            kind = "teacher" if rnd == 0 else "student"
            stage_spec = spec[kind]
            overrides = dict(stage_spec.get("overrides", {}))
            if stage_spec.get("weights"):
                stage = self._given_stage(kind, setting, rnd, seed, stage_spec["weights"], stage_spec.get("config", ""),
                                          overrides)
                self.stages[(kind, setting, rnd, seed)] = stage
                parent = stage
                continue
            lineage = data if parent is None else parent.sig
            sig = signature(kind, model_config_content(stage_spec["config"]), overrides, seed, lineage,
                            self.behaviour_version)
            opts = {"SEED": seed}
            inputs = prepared
            if parent is not None:
                opts.update({"MODEL.WEIGHTS": parent.weights, "MODEL.DISTILL.TEACHER_WEIGHTS": parent.weights})
                inputs = prepared + (parent.weights,)
            stage = Stage(kind=kind, setting=setting, round=rnd, config=stage_spec["config"], overrides=overrides,
                          sig=sig, folder=self._folder(kind, setting, rnd, seed, sig), inputs=inputs, opts=opts,
                          seed=seed)
            self.stages[(kind, setting, rnd, seed)] = stage
            if rnd == 1 and (self.rounds_ablation(setting) or {}).get("control", False):
                self._plan_control(setting, stage_spec, parent, prepared, seed)
            parent = stage
        stage_spec = spec["tuning"]
        overrides = dict(stage_spec.get("overrides", {}))
        if given == "tuning":
            self.stages[("tuning", setting, rounds, seed)] = self._given_stage(
                "tuning", setting, rounds, seed, stage_spec["weights"], stage_spec["config"], overrides)
            return
        clip = self.clips[seed]
        for rnd in self.tuned_rounds(setting):
            generator = self.generator(setting, rnd, seed)
            sig = signature("tuning", model_config_content(stage_spec["config"]), overrides, seed,
                            generator.sig, clip.sig if clip else None, self.behaviour_version)
            opts = {"SEED": seed, "MODEL.WEIGHTS": generator.weights, **self.clip_opts(seed)}
            inputs = prepared + (generator.weights,) + ((clip.weights,) if clip else ())
            self.stages[("tuning", setting, rnd, seed)] = Stage(
                kind="tuning", setting=setting, round=rnd, config=stage_spec["config"], overrides=overrides, sig=sig,
                folder=self._folder("tuning", setting, rnd, seed, sig), inputs=inputs, opts=opts, seed=seed)

    def rounds_ablation(self, setting: str) -> dict | None:
        """The rounds ablation's spec when it covers ``setting``, else None."""
        spec = self.config.get("ablations", {}).get("rounds", {})
        return spec if setting in spec.get("settings", []) else None

    def _plan_control(self, setting: str, student_spec: dict, teacher: Stage, prepared: tuple, seed: int) -> None:
        """Round 1's student config and schedule, started from the teacher, trained on the ground truth
        alone (plain Mask2Former loss, no teacher): separates what the pseudo-labels do from what
        more training does."""
        overrides = {**student_spec.get("overrides", {}), "MODEL.META_ARCHITECTURE": "MaskFormer"}
        sig = signature("control", model_config_content(student_spec["config"]), overrides, seed, teacher.sig,
                        self.behaviour_version)
        self.stages[("control", setting, 1, seed)] = Stage(
            kind="control", setting=setting, round=1, config=student_spec["config"], overrides=overrides, sig=sig,
            folder=self._folder("control", setting, 1, seed, sig), inputs=prepared + (teacher.weights,),
            opts={"SEED": seed, "MODEL.WEIGHTS": teacher.weights}, seed=seed)

    def clip_opts(self, seed: int | None = None) -> dict:
        clip = self.clips[self.seed if seed is None else seed]
        return {"MODEL.MASQ_CLIP.PRETRAINED": clip.weights} if clip else {}

    def tuned_rounds(self, setting: str) -> list[int]:
        """Rounds whose mask generator gets MasQ-Tuned: the last, plus all when the rounds ablation asks."""
        rounds_ablation = self.rounds_ablation(setting)
        if rounds_ablation is not None and rounds_ablation.get("tune", True):
            return list(range(self.rounds_of(setting) + 1))
        return [self.rounds_of(setting)]

    def final_stage(self, setting: str, seed: int | None = None) -> Stage:
        """The MasQ-Tuning of ``setting``'s last round: the model its tables report."""
        return self.stages[("tuning", setting, self.rounds_of(setting), self.seed if seed is None else seed)]

    def generator(self, setting: str, rnd: int, seed: int | None = None) -> Stage:
        """The mask generator of round ``rnd``: the teacher (0) or student ``rnd``."""
        return self.stages[("teacher" if rnd == 0 else "student", setting, rnd, self.seed if seed is None else seed)]

    def stage(self, kind: str, setting: str, rnd: int, sig: str | None = None, seed: int | None = None) -> Stage:
        """Look a trained stage up; ``sig`` (from a path) must be the current config's signature."""
        seed = self.seed if seed is None else int(seed)
        if kind == "clip":
            stage = self.clips.get(seed)
        else:
            stage = self.stages.get((kind, setting, rnd, seed))
        if stage is None or not stage.trained:
            raise ValueError(f"the config plans no {kind} training for setting {setting!r}, round {rnd}, seed {seed}")
        if sig is not None and sig != stage.sig:
            raise ValueError(f"{kind} {setting!r} round {rnd} seed {seed}: path signature {sig} is not the current "
                             f"config's ({stage.sig}); request the targets of the current config instead")
        return stage

    def stages_of(self, kind: str) -> list[Stage]:
        if kind == "clip":
            return [c for c in self.clips.values() if c]
        return [s for (k, *_), s in self.stages.items() if k == kind]

    def trained_stages(self) -> list[Stage]:
        """Every stage that a training job produces (given checkpoints excluded), CLIP first."""
        return [s for s in self.stages_of("clip") + list(self.stages.values()) if s.trained]

    # ----------------------------------------------------------------------------- evaluations
    def metrics_path(self, setting: str, variant: str, test: str, seed: int | None = None) -> str:
        seed = self.seed if seed is None else seed
        return f"{self.results}/metrics/{setting}/seed{seed}/{variant}/{test}.json"

    def _evaluation(self, setting, variant, test, *, stage: Stage, config: str | None = None, extra=None,
                    overrides_from: Stage | None = None):
        """``stage``'s weights on test ``test``; model overrides come from ``overrides_from`` (default ``stage``)."""
        spec = self.config["settings"][setting]
        seed = stage.seed
        test_spec = spec["tests"][test] if test != PROPOSALS_TEST else spec["proposals"]
        model_overrides = (overrides_from or stage).model_overrides
        # The model's test vocabulary follows DATASETS.TEST; each job writes under its own OUTPUT_DIR.
        opts = {**model_overrides, "DATASETS.TEST": [test_spec["dataset"]],
                "OUTPUT_DIR": f"{self.results}/eval/{setting}/seed{seed}/{variant}/{test}",
                **test_spec.get("overrides", {}), **(extra or {})}
        uses_clip = stage.kind == "tuning" or overrides_from is not None  # proposals need no CLIP
        clip = self.clips[seed]
        if uses_clip:
            opts.update(self.clip_opts(seed))
        inputs = (stage.weights,) + ((clip.weights,) if clip and uses_clip else ())
        inputs += tuple(self.prepared(d) for d in spec["datasets"])
        return Evaluation(setting=setting, variant=variant, test=test, dataset=test_spec["dataset"],
                          config=config or test_spec.get("config") or spec["tuning"]["config"],
                          weights=stage.weights, opts=opts, inputs=tuple(dict.fromkeys(inputs)),
                          path=self.metrics_path(setting, variant, test, seed), seed=seed, stage=stage.kind,
                          round=stage.round)

    def _plan_evaluations(self, setting: str, seed: int) -> list[Evaluation]:
        spec = self.config["settings"][setting]
        ablations = self.config.get("ablations", {})
        final = self.final_stage(setting, seed)
        evals = [self._evaluation(setting, MAIN_VARIANT, t, stage=final) for t in spec["tests"]]
        obj = ablations.get("object_score", {})
        if setting in obj.get("settings", []):
            evals += [self._evaluation(setting, NO_OBJECT_SCORE, t, stage=final,
                                       extra={"MODEL.MASQ_CLIP.USE_OBJECT_SCORE": False}) for t in obj["tests"]]
        frozen = ablations.get("frozen_clip", {})
        if setting in frozen.get("settings", []):
            generator = self.generator(setting, final.round, seed)
            evals += [self._evaluation(setting, FROZEN_CLIP, t, stage=generator, overrides_from=final,
                                       extra={"MODEL.MASQ_CLIP.TUNING": False}) for t in frozen["tests"]]
        rounds = self.rounds_ablation(setting)
        if rounds is not None:
            for rnd in range(self.rounds + 1):
                generator = self.generator(setting, rnd, seed)
                evals.append(self._evaluation(setting, proposals_variant(rnd), PROPOSALS_TEST, stage=generator,
                                              config=generator.config))
                if rnd == 1 and ("control", setting, 1, seed) in self.stages:
                    control = self.stages[("control", setting, 1, seed)]
                    evals.append(self._evaluation(setting, CONTROL_PROPOSALS, PROPOSALS_TEST, stage=control,
                                                  config=control.config))
                if rnd < self.rounds and ("tuning", setting, rnd, seed) in self.stages:
                    evals.append(self._evaluation(setting, round_variant(rnd), rounds["test"],
                                                  stage=self.stages[("tuning", setting, rnd, seed)]))
        return evals

    def eval_jobs(self) -> list[EvalJob]:
        """The evaluations grouped into one job per evaluated model (setting, seed, weights file), in
        plan order; a model evaluated under two configs (the frozen-CLIP variant and the proposals of
        the same student) is still one job."""
        groups: dict[tuple, list[Evaluation]] = {}
        for ev in self.evaluations:
            groups.setdefault((ev.setting, ev.seed, ev.weights), []).append(ev)
        jobs, names = [], {}
        for (setting, seed, _), evals in groups.items():
            model = f"{evals[0].stage}{evals[0].round}"
            job = EvalJob(setting=setting, seed=seed, model=model, evaluations=tuple(evals))
            names[job.name] = names.get(job.name, 0) + 1
            if names[job.name] > 1:  # two given files of one stage: keep the names unique
                job = EvalJob(setting=setting, seed=seed, model=f"{model}_{names[job.name]}", evaluations=tuple(evals))
            jobs.append(job)
        return jobs

    def evaluation(self, setting: str, variant: str, test: str, seed: int | None = None) -> Evaluation:
        seed = self.seed if seed is None else int(seed)
        for ev in self.evaluations:
            if (ev.setting, ev.variant, ev.test, ev.seed) == (setting, variant, test, seed):
                return ev
        raise ValueError(f"the config plans no evaluation {setting}/{variant}/{test} for seed {seed}")

    # ----------------------------------------------------------------------------- outputs
    @property
    def manifest_file(self) -> str:
        return f"{self.results}/manifest.json"

    def table_specs(self) -> list[TableSpec]:
        """The tables a config produces, in order."""
        paper = bool(self.config.get("paper_numbers", False))
        ablations = self.config.get("ablations", {})
        miou = self.config.get("miou_convention", "gt")
        specs = [TableSpec(name=name, kind=kind, setting=s, paper=paper, miou_convention=miou)
                 for s, name, kind in (("base-novel", "base_novel", "base_novel"),
                                       ("cross-dataset", "cross_dataset", "cross_dataset")) if s in self.settings]
        for s in ablations.get("rounds", {}).get("settings", []):
            specs.append(TableSpec(name=f"ablation_rounds_{s}", kind="rounds", setting=s, rounds=self.rounds_of(s),
                                   test=ablations["rounds"]["test"], paper=paper and s == "base-novel"))
        for kind in ("object_score", "frozen_clip"):
            for s in ablations.get(kind, {}).get("settings", []):
                specs.append(TableSpec(name=f"ablation_{kind}_{s}", kind=kind, setting=s,
                                       tests=tuple(ablations[kind]["tests"]),
                                       paper=paper and s == "base-novel" and kind == "object_score"))
        return specs

    def table_names(self) -> list[str]:
        return [t.name for t in self.table_specs()]

    def table_files(self) -> list[str]:
        return [f"{self.results}/tables/{n}.{ext}" for n in self.table_names() for ext in ("md", "tex", "csv", "html")]

    def plot_specs(self) -> list[PlotSpec]:
        """The plots a config produces: training curves per setting that trains anything, base vs
        novel (base-novel), the small CLIP's zero-shot accuracy (when it is trained)."""
        specs = [PlotSpec(name=f"training_{s}.png", kind="training", setting=s) for s in self.settings
                 if any(st.setting == s for st in self.trained_stages())]
        rounds = self.config.get("ablations", {}).get("rounds", {})
        specs += [PlotSpec(name=f"base_novel_{s}.png", kind="base_novel", setting=s, rounds=self.rounds_of(s),
                           test=rounds.get("test", "generalized"))
                  for s in self.settings if s == "base-novel"]
        if any(c.trained for c in self.stages_of("clip")):
            specs.append(PlotSpec(name="clip_zero_shot.png", kind="clip_zero_shot"))
        return specs

    def plot_files(self) -> list[str]:
        return [f"{self.results}/plots/{p.name}" for p in self.plot_specs()]

    def curve_files(self) -> list[str]:
        return [f"{s.folder}/metrics.jsonl" for s in self.stages.values() if s.trained]

    def clip_metrics_files(self) -> dict[int, str]:
        """``tiny.json`` beside each trained small CLIP, per seed."""
        return {seed: c.weights[:-len(".pt")] + ".json" for seed, c in self.clips.items() if c and c.trained}

    def manifest(self) -> Manifest:
        """The contract the tables and plots read (``masqclip.manifest``)."""
        curves = [CurveEntry(setting=s.setting, stage=s.kind, round=s.round, seed=s.seed, path=f"{s.folder}/metrics.jsonl")
                  for s in self.stages.values() if s.trained]
        return Manifest(seeds=list(self.seeds), evaluations=[e.entry() for e in self.evaluations],
                        tables=self.table_specs(), plots=self.plot_specs(), curves=curves,
                        clip_metrics=self.clip_metrics_files())

    def qualitative_files(self) -> list[str]:
        spec = self.config.get("qualitative", {})
        return [f"{self.results}/plots/qualitative/{s}/{i}.png"
                for s, images in spec.items() if s in self.settings for i in range(len(images))]

    def qualitative_opts(self, setting: str) -> dict:
        """Overrides of ``masqclip predict`` for a setting's final model (first seed): its model
        overrides, the small CLIP, and the vocabulary of the setting's first test set."""
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
        from ..config import get_cfg, validate_config

        seen = set()
        loaded = {}  # each YAML read once (as setup_cfg would: defaults <- file <- overrides)
        pairs = [(s.config, s.command_opts()) for s in self.stages.values() if s.trained]
        pairs += [(e.config, format_opts(e.opts)) for e in self.evaluations]
        for cfg_file, opts in pairs:
            if (cfg_file, opts) in seen:
                continue
            seen.add((cfg_file, opts))
            if cfg_file not in loaded:
                loaded[cfg_file] = get_cfg()
                if cfg_file:
                    loaded[cfg_file].merge_from_file(cfg_file)
            cfg = loaded[cfg_file].clone()
            cfg.merge_from_list(shlex.split(opts))
            validate_config(cfg, cfg_file or "")
