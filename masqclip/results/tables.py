"""Result tables in the paper's layout, built from the metrics JSONs that ``masqclip eval`` writes.

Which tables exist and which metrics file is which (setting, variant, test, seed) comes from the
pipeline's manifest (``masqclip.manifest``) only. A metrics file's ``results`` hold
``{"segm"|"panoptic_seg"|"sem_seg"|"proposals": {...}}`` percentages. Each builder returns a
:class:`Table` for one seed's metrics; :func:`combine_seeds` turns one table per seed into mean +-
standard deviation (per-seed values kept for the CSV); :func:`write_tables` writes Markdown, LaTeX
and CSV. With ``paper=True`` the paper's numbers (docs/method.md) and our difference to them are added.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError, UserFileNotFoundError
from ..manifest import (CONTROL_PROPOSALS, FROZEN_CLIP, MAIN_VARIANT, NO_OBJECT_SCORE, PROPOSALS_TEST, EvaluationEntry,
                        Manifest, TableSpec, proposals_variant, round_variant)

# The paper's numbers (MasQCLIP, Mask2Former R50; ICCV 2023), see docs/method.md.
PAPER_BASE_NOVEL = {"constrained base": 51.2, "constrained novel": 34.3, "generalized base": 51.0,
                    "generalized novel": 31.9, "generalized all": 46.0}
PAPER_CROSS_DATASET = {"A-150 mIoU": 30.4, "A-847 mIoU": 10.7, "PC-59 mIoU": 57.8, "PC-459 mIoU": 18.2,
                       "ADE PQ": 23.3, "ADE PQ things": 21.2, "ADE PQ stuff": 27.7}
PAPER_ROUNDS_NOVEL_AP50 = (22.6, 26.1, 31.9, 31.2)  # rounds 0, 1, 2, 3
PAPER_OBJECT_SCORE_NOVEL_AP50 = {NO_OBJECT_SCORE: 11.3, MAIN_VARIANT: 22.6}  # measured at round 0
# Semantic mIoU convention of the tables -> (metric key written by the evaluator, column label, note).
MIOU_CONVENTIONS = {
    "gt": ("mIoU", "mIoU (gt classes)", "mIoU = mean IoU over the classes present in the ground truth "
                                       "(detectron2 since 2022-07)"),
    "d2v06": ("mIoU_d2v06", "mIoU (d2 v0.6)", "mIoU = detectron2 v0.6's: IoU summed over ground-truth classes, "
                                              "divided by the classes present in ground truth or predictions"),
}
OURS, PAPER, DIFF = "MasQCLIP (ours)", "MasQCLIP (paper)", "difference (ours - paper)"
MISSING = "-"


@dataclass
class Table:
    """A titled grid of numbers; ``None`` = not measured."""

    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[float | None]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # With several seeds: rows hold means, ``std`` the sample standard deviation per row label and
    # ``per_seed`` {seed: {label: values}} (written to the CSV).
    std: dict[str, list[float | None]] = field(default_factory=dict)
    per_seed: dict[int, dict[str, list[float | None]]] = field(default_factory=dict)

    def add(self, label: str, values: list[float | None]) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"row {label!r} has {len(values)} values for {len(self.columns)} columns")
        self.rows.append((label, [None if v is None or math.isnan(v) else float(v) for v in values]))

    def add_paper(self, paper: dict[str, float]) -> None:
        """Append the paper's row and the difference ours - paper (first row = ours)."""
        ours = self.rows[0][1]
        ref = [paper.get(c) for c in self.columns]
        self.add(PAPER, ref)
        self.add(DIFF, [None if a is None or b is None else a - b for a, b in zip(ours, ref)])

    def value(self, row: str, column: str) -> float | None:
        return dict(self.rows)[row][self.columns.index(column)]

    # ------------------------------------------------------------------ formats
    @staticmethod
    def _fmt(v: float | None) -> str:
        return MISSING if v is None else f"{v:.1f}"

    def _cells(self, label: str, vals: list, pm: str) -> list[str]:
        spread = self.std.get(label)
        if not spread:
            return [self._fmt(v) for v in vals]
        return [self._fmt(v) if v is None or s is None else f"{v:.1f}{pm}{s:.1f}" for v, s in zip(vals, spread)]

    def to_markdown(self) -> str:
        head = [""] + self.columns
        lines = [f"### {self.title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join([label] + self._cells(label, vals, " ± ")) + " |" for label, vals in self.rows]
        lines += [""] + [f"_{n}_" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def to_latex(self) -> str:
        esc = _latex_escape
        lines = [f"% {esc(self.title)}", "\\begin{tabular}{l" + "r" * len(self.columns) + "}", "\\toprule",
                 " & ".join([""] + [esc(c) for c in self.columns]) + " \\\\", "\\midrule"]
        lines += [" & ".join([esc(label)] + self._cells(label, vals, " $\\pm$ ")) + " \\\\"
                  for label, vals in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"] + [f"% {esc(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """One row per label (the mean over seeds); with several seeds each is followed by its
        ``<label> (std)`` and ``<label> (seed N)`` rows."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([""] + self.columns)
        cell = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
        for label, vals in self.rows:
            writer.writerow([label] + [cell(v) for v in vals])
            if label in self.std:
                writer.writerow([f"{label} (std)"] + [cell(v) for v in self.std[label]])
            for seed, rows in self.per_seed.items():
                if label in rows:
                    writer.writerow([f"{label} (seed {seed})"] + [cell(v) for v in rows[label]])
        return buf.getvalue()

    def to_html(self) -> str:
        """The table as an HTML fragment (its title as caption, the notes below, a scoped style):
        a page of its own in a browser, and what the Snakemake report shows in place of a download."""
        esc = html.escape
        lines = ['<meta charset="utf-8">', f"<style>{_HTML_STYLE}</style>", f'<div class="masqclip-table" id="{esc(self.name)}">',
                 f"<table><caption>{esc(self.title)}</caption>",
                 "<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in [""] + self.columns) + "</tr></thead>",
                 "<tbody>"]
        lines += ["<tr><th>" + esc(label) + "</th>" + "".join(f"<td>{esc(c)}</td>" for c in self._cells(label, vals, " ± ")) + "</tr>"
                  for label, vals in self.rows]
        lines += ["</tbody></table>"] + [f'<p class="note">{esc(n)}</p>' for n in self.notes] + ["</div>"]
        return "\n".join(lines) + "\n"


_HTML_STYLE = (".masqclip-table{font-family:sans-serif;margin:0.5em 0 1.5em}"
               ".masqclip-table table{border-collapse:collapse}"
               ".masqclip-table caption{font-weight:bold;text-align:left;padding:0.3em 0}"
               ".masqclip-table th,.masqclip-table td{border-bottom:1px solid #ccc;padding:0.25em 0.7em}"
               ".masqclip-table td{text-align:right}.masqclip-table thead th{border-bottom:2px solid #555}"
               ".masqclip-table tbody th{text-align:left;font-weight:normal}"
               ".masqclip-table .note{font-size:0.85em;color:#555;max-width:60em;margin:0.2em 0}")


def _latex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text).replace("~", "\\textasciitilde{}")


# ---------------------------------------------------------------------- metrics lookup
def load_metrics(entries: list[EvaluationEntry]) -> dict[int, dict[tuple[str, str, str], dict]]:
    """``{seed: {(setting, variant, test): results}}`` from the metrics files the manifest lists."""
    out: dict[int, dict] = {}
    for entry in entries:
        path = entry.metrics
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise UserFileNotFoundError(f"metrics file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: a metrics file holds a JSON object, not a {type(data).__name__}")
        out.setdefault(entry.seed, {})[(entry.setting, entry.variant, entry.test)] = data.get("results", {})
    return out


def metric(results: dict | None, section: str, key: str) -> float | None:
    """``results[section][key]`` or None when the evaluation or the metric is absent."""
    if not results:
        return None
    value = results.get(section, {}).get(key)
    return None if value is None else float(value)


def novel_ap50(results: dict | None, test: str) -> float | None:
    """Novel-class AP50 of an instance evaluation: the novel split of a generalized (all-class)
    evaluation, or the whole AP50 of a constrained-novel one."""
    key = "AP50_novel" if test == "generalized" else "AP50"
    return metric(results, "segm", key)


def best_recall(results: dict | None, split: str = "novel") -> tuple[str, float | None]:
    """The class-agnostic recall at the largest k reported (``AR@k_<split>``, else ``AR@k``)."""
    props = (results or {}).get("proposals", {})
    for suffix in (f"_{split}", ""):
        ks = sorted((int(m.group(1)), k) for k in props if (m := re.fullmatch(rf"AR@(\d+){suffix}", k)))
        if ks:
            return ks[-1][1], float(props[ks[-1][1]])
    return f"AR_{split}", None


# ---------------------------------------------------------------------- builders
def base_novel_table(metrics: dict, *, setting: str = "base-novel", paper: bool = False) -> Table:
    """Constrained base/novel and generalized base/novel/all mask AP50 of the final model."""
    table = Table("base_novel", "Open-vocabulary instance segmentation, base-novel split (mask AP50)",
                  list(PAPER_BASE_NOVEL))
    get = lambda test: metrics.get((setting, MAIN_VARIANT, test))  # noqa: E731
    table.add(OURS, [metric(get("constrained_base"), "segm", "AP50"),
                     metric(get("constrained_novel"), "segm", "AP50"),
                     metric(get("generalized"), "segm", "AP50_base"),
                     metric(get("generalized"), "segm", "AP50_novel"),
                     metric(get("generalized"), "segm", "AP50")])
    if paper:
        table.add_paper(PAPER_BASE_NOVEL)
    return table


def cross_dataset_table(metrics: dict, *, setting: str = "cross-dataset", paper: bool = False,
                        miou_convention: str = "gt") -> Table:
    """Semantic mIoU on A-150/A-847/PC-59/PC-459 and ADE20K-150 panoptic PQ (things, stuff).

    ``miou_convention`` (a key of ``MIOU_CONVENTIONS``) picks the mIoU and names it in the columns;
    the paper's numbers sit beside either (the paper does not state its convention)."""
    key, label, note = MIOU_CONVENTIONS[miou_convention]
    names = {c: c.replace("mIoU", label) for c in PAPER_CROSS_DATASET}
    table = Table("cross_dataset", "Cross-dataset open-vocabulary segmentation (trained on COCO panoptic)",
                  list(names.values()))
    get = lambda test: metrics.get((setting, MAIN_VARIANT, test))  # noqa: E731
    a150 = metric(get("ade150"), "sem_seg", key)
    if a150 is None:  # the panoptic evaluation of ADE20K-150 also reports mIoU
        a150 = metric(get("ade150_panoptic"), "sem_seg", key)
    pan = get("ade150_panoptic")
    table.add(OURS, [a150, metric(get("ade847"), "sem_seg", key), metric(get("pc59"), "sem_seg", key),
                     metric(get("pc459"), "sem_seg", key), metric(pan, "panoptic_seg", "PQ"),
                     metric(pan, "panoptic_seg", "PQ_th"), metric(pan, "panoptic_seg", "PQ_st")])
    if paper:
        table.add_paper({names[c]: v for c, v in PAPER_CROSS_DATASET.items()})
    table.notes.append(note)
    return table


def rounds_table(metrics: dict, *, setting: str, rounds: int, test: str, paper: bool = False) -> Table:
    """Per distillation round: class-agnostic novel recall of the mask generator (all proposals,
    and only those it scores as objects, ``AR@conf``) and novel AP50 after MasQ-Tuning it (round
    ``rounds`` is the final model)."""
    columns = ["class-agnostic novel recall", "confident novel recall", "novel AP50"]
    if paper:
        columns.append("novel AP50 (paper)")
    table = Table(f"ablation_rounds_{setting}", f"Progressive distillation rounds ({setting})", columns)
    recall_key, threshold = None, None
    for rnd in range(rounds + 1):
        proposals = metrics.get((setting, proposals_variant(rnd), PROPOSALS_TEST))
        key, recall = best_recall(proposals)
        recall_key = recall_key or (key if recall is not None else None)
        if threshold is None:
            threshold = metric(proposals, "proposals", "conf_score_threshold")
        variant = MAIN_VARIANT if rnd == rounds else round_variant(rnd)
        row = [recall, metric(proposals, "proposals", "AR@conf_novel"), novel_ap50(metrics.get((setting, variant, test)), test)]
        if paper:
            row.append(PAPER_ROUNDS_NOVEL_AP50[rnd] if rnd < len(PAPER_ROUNDS_NOVEL_AP50) else None)
        table.add("teacher (round 0)" if rnd == 0 else f"student round {rnd}", row)
    table.notes.append(f"recall = {recall_key or 'AR'} (proposals); confident = AR@conf_novel (only proposals "
                       f"scored >= {threshold if threshold is not None else 'TEST.PROPOSAL_RECALL.SCORE_THRESHOLD'}); "
                       f"novel AP50 on the '{test}' test")
    control = metrics.get((setting, CONTROL_PROPOSALS, PROPOSALS_TEST))
    if control is not None:
        row = [best_recall(control)[1], metric(control, "proposals", "AR@conf_novel"), None]
        table.add("round 1 without pseudo-labels (control)", row + ([None] if paper else []))
        table.notes.append("control = round 1's student config and schedule trained from the teacher on the "
                           "ground truth alone (no pseudo-labels)")
    return table


def object_score_table(metrics: dict, *, setting: str, tests: list[str], paper: bool = False) -> Table:
    """Novel AP50 with CLIP scores only vs fused with the mask generator's object score."""
    columns = [f"novel AP50 ({t})" for t in tests] + (["novel AP50 (paper, round 0)"] if paper else [])
    table = Table(f"ablation_object_score_{setting}", f"Object-score fusion ({setting})", columns)
    for label, variant in (("CLIP scores only", NO_OBJECT_SCORE), ("with object score", MAIN_VARIANT)):
        row = [novel_ap50(metrics.get((setting, variant, t)), t) for t in tests]
        table.add(label, row + ([PAPER_OBJECT_SCORE_NOVEL_AP50[variant]] if paper else []))
    return table


INSTANCE_COLUMNS = {  # test role -> (column label, segm metric)
    "generalized": (("base AP50", "AP50_base"), ("novel AP50", "AP50_novel"), ("all AP50", "AP50")),
    "constrained_base": (("base AP50", "AP50"),),
    "constrained_novel": (("novel AP50", "AP50"),),
}


def frozen_clip_table(metrics: dict, *, setting: str, tests: list[str]) -> Table:
    """Frozen CLIP query projections for the mask tokens vs MasQ-Tuning (AP50 per split and test)."""
    columns = [(t, label, key) for t in tests for label, key in INSTANCE_COLUMNS[t]]
    table = Table(f"ablation_frozen_clip_{setting}", f"MasQ-Tuning vs frozen CLIP ({setting})",
                  [f"{label} ({t})" for t, label, _ in columns])
    for label, variant in (("frozen CLIP", FROZEN_CLIP), ("MasQ-Tuning", MAIN_VARIANT)):
        table.add(label, [metric(metrics.get((setting, variant, t)), "segm", key) for t, _, key in columns])
    return table


def build_table(spec: TableSpec, metrics: dict) -> Table:
    """The table ``spec`` (from the manifest) from one seed's ``{(setting, variant, test): results}``."""
    if spec.kind == "base_novel":
        return base_novel_table(metrics, setting=spec.setting, paper=spec.paper)
    if spec.kind == "cross_dataset":
        return cross_dataset_table(metrics, setting=spec.setting, paper=spec.paper,
                                   miou_convention=spec.miou_convention)
    if spec.kind == "rounds":
        return rounds_table(metrics, setting=spec.setting, rounds=spec.rounds, test=spec.test, paper=spec.paper)
    if spec.kind == "object_score":
        return object_score_table(metrics, setting=spec.setting, tests=list(spec.tests), paper=spec.paper)
    if spec.kind == "frozen_clip":
        return frozen_clip_table(metrics, setting=spec.setting, tests=list(spec.tests))
    raise UserError(f"unknown table kind {spec.kind!r} in the manifest")


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    mean = sum(present) / len(present)
    if len(present) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))


def combine_seeds(tables: dict[int, Table]) -> Table:
    """One table per seed (same layout) -> means, sample standard deviations and the per-seed values.
    A single seed's table is returned as it is."""
    if len(tables) == 1:
        return next(iter(tables.values()))
    first = next(iter(tables.values()))
    out = Table(first.name, first.title, list(first.columns), notes=list(first.notes))
    for i, (label, _) in enumerate(first.rows):
        per_seed = [t.rows[i][1] for t in tables.values()]
        stats = [_mean_std([vals[c] for vals in per_seed]) for c in range(len(first.columns))]
        out.add(label, [m for m, _ in stats])
        if label != PAPER:  # the paper's numbers do not vary with our seed
            out.std[label] = [s for _, s in stats]
            for seed, t in tables.items():
                out.per_seed.setdefault(seed, {})[label] = t.rows[i][1]
    seeds = ", ".join(map(str, tables))
    out.notes.append(f"mean ± sample standard deviation over seeds {seeds} (per-seed values in the CSV)")
    return out


def build_tables(manifest: Manifest, metrics: dict[int, dict] | None = None, *,
                 miou_convention: str | None = None) -> list[Table]:
    """Every table the manifest lists, in its order; ``metrics`` (default: read from the manifest's
    files) maps seed -> ``{(setting, variant, test): results}``; ``miou_convention`` overrides the
    manifest's (a key of ``MIOU_CONVENTIONS``)."""
    if metrics is None:
        metrics = load_metrics(manifest.evaluations)
    specs = [replace(s, miou_convention=miou_convention) if miou_convention else s for s in manifest.tables]
    return [combine_seeds({seed: build_table(spec, metrics.get(seed, {})) for seed in manifest.seeds})
            for spec in specs]


def write_tables(tables: list[Table], output_dir: str | Path) -> list[Path]:
    """``<output_dir>/<name>.{md,tex,csv,html}`` per table; returns the paths written."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        for ext, text in (("md", table.to_markdown()), ("tex", table.to_latex()), ("csv", table.to_csv()),
                          ("html", table.to_html())):
            path = out / f"{table.name}.{ext}"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written
