"""The one contract between the job plan (``masqclip.pipeline``) and the result tables and plots
(``masqclip.results``): a JSON manifest that the plan writes (``masqclip plan``) and
``masqclip results tables|plots --manifest`` reads.

It lists every evaluation (setting, stage, round, seed, variant, test role, dataset, metrics file),
every table and plot to draw (with what they need), the training curves and the small CLIP's
metrics files. Tables and plots read nothing else: they never derive file names, variants or rounds
from flags or folder names. Neither side imports the other; both import this module.

Names fixed here:

- stages (folders, MLflow ``stage`` tags, resources, plan): ``clip``, ``teacher``, ``student``,
  ``control`` (the rounds ablation's student without pseudo-labels), ``tuning`` (MasQ-Tuning);
- evaluation variants: ``masqclip`` (the method's final model: the last round's MasQ-Tuning),
  ``no-objscore``, ``frozen-clip``, ``round<r>`` (MasQ-Tuning of round r's generator),
  ``proposals-r<r>`` (class-agnostic recall of round r's generator), ``proposals-control``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import UserError, UserFileNotFoundError

MANIFEST_VERSION = 1
STAGES = ("clip", "teacher", "student", "control", "tuning")
MAIN_VARIANT = "masqclip"
NO_OBJECT_SCORE = "no-objscore"
FROZEN_CLIP = "frozen-clip"
CONTROL_PROPOSALS = "proposals-control"
PROPOSALS_TEST = "proposals"


def proposals_variant(rnd: int) -> str:
    """Class-agnostic recall of round ``rnd``'s mask generator (0 = teacher)."""
    return f"proposals-r{rnd}"


def round_variant(rnd: int) -> str:
    """MasQ-Tuning of round ``rnd``'s mask generator, when it is not the final model."""
    return f"round{rnd}"


@dataclass(frozen=True)
class EvaluationEntry:
    """One metrics file: which model (stage, round, seed) in which variant on which test."""

    setting: str
    stage: str
    round: int
    seed: int
    variant: str
    test: str
    dataset: str
    metrics: str


@dataclass(frozen=True)
class CurveEntry:
    """The ``metrics.jsonl`` of one training job."""

    setting: str
    stage: str
    round: int
    seed: int
    path: str

    @property
    def label(self) -> str:
        return self.stage if self.stage in ("teacher", "clip") else f"{self.stage} r{self.round}"


@dataclass(frozen=True)
class TableSpec:
    """A table to build. ``kind``: base_novel | cross_dataset | rounds | object_score | frozen_clip.
    ``miou_convention``: the semantic mIoU the table reports (gt | d2v06)."""

    name: str
    kind: str
    setting: str
    paper: bool = False
    rounds: int = 0
    test: str = ""
    tests: tuple = ()
    miou_convention: str = "gt"


@dataclass(frozen=True)
class PlotSpec:
    """A plot to draw (file name under the plots folder). ``kind``: training | base_novel | clip_zero_shot."""

    name: str
    kind: str
    setting: str = ""
    rounds: int = 0
    test: str = ""


@dataclass
class Manifest:
    seeds: list[int]
    evaluations: list[EvaluationEntry] = field(default_factory=list)
    tables: list[TableSpec] = field(default_factory=list)
    plots: list[PlotSpec] = field(default_factory=list)
    curves: list[CurveEntry] = field(default_factory=list)
    clip_metrics: dict[int, str] = field(default_factory=dict)  # seed -> pretrain-clip metrics JSON

    def to_dict(self) -> dict:
        return {"version": MANIFEST_VERSION, "seeds": list(self.seeds),
                "evaluations": [asdict(e) for e in self.evaluations],
                "tables": [{**asdict(t), "tests": list(t.tests)} for t in self.tables],
                "plots": [asdict(p) for p in self.plots],
                "curves": [asdict(c) for c in self.curves],
                "clip_metrics": {str(k): v for k, v in self.clip_metrics.items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def digest(self) -> str:
        """Short hash of the content (the workflow re-writes the file when it changes)."""
        return hashlib.sha1(self.to_json().encode("utf-8")).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {data.get('version')!r}, expected {MANIFEST_VERSION}")
        return cls(seeds=[int(s) for s in data["seeds"]],
                   evaluations=[EvaluationEntry(**e) for e in data["evaluations"]],
                   tables=[TableSpec(**{**t, "tests": tuple(t["tests"])}) for t in data["tables"]],
                   plots=[PlotSpec(**p) for p in data["plots"]],
                   curves=[CurveEntry(**c) for c in data["curves"]],
                   clip_metrics={int(k): v for k, v in data["clip_metrics"].items()})

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        """The manifest at ``path``; a missing or malformed file raises a UserError naming it."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_dict(json.load(fh))
        except FileNotFoundError:
            raise UserFileNotFoundError(f"pipeline manifest not found: {path}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(f"{path}: not a readable pipeline manifest ({err})") from None
