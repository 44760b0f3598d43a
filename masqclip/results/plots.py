"""Plots for the results folder and the Snakemake report (matplotlib, Agg backend, PNG).

- ``training_<setting>.png``: one panel per trained stage, loss against iteration (from the
  ``metrics.jsonl`` each training job writes in its OUTPUT_DIR);
- ``base_novel_<setting>.png``: class-agnostic base/novel recall by distillation round, and base vs
  novel AP50 of every evaluated model variant;
- ``clip_zero_shot.png``: the small CLIP's zero-shot crop accuracy (synthetic world only).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserFileNotFoundError
from .plan import CONTROL_PROPOSALS, FROZEN_CLIP, MAIN_VARIANT, NO_OBJECT_SCORE
from .tables import best_recall, metric

ITERATION_KEYS = ("iteration", "iter", "step")
TOTAL_LOSS_KEYS = ("total_loss", "loss")
FIGURE_DPI = 100
PANEL_SIZE = (4.0, 3.0)  # inches per subplot
MAX_COLUMNS = 3  # panels per row of the training-curve figure
FEW_POINTS = 20  # curves with fewer logged points get markers (a single point is otherwise invisible)


def planned_plots(settings: list[str], has_clip: bool) -> list[str]:
    """File names (under ``results/plots``) that :func:`make_plots` writes for a config."""
    names = [f"training_{s}.png" for s in settings]
    names += [f"base_novel_{s}.png" for s in settings if s == "base-novel"]
    return names + (["clip_zero_shot.png"] if has_clip else [])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_training_curve(path: str | Path) -> tuple[list[float], list[float]]:
    """(iterations, total loss) from a ``metrics.jsonl``; the total is ``total_loss`` when logged,
    else the sum of the ``loss*`` terms. Lines without an iteration or a loss are skipped."""
    xs, ys = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            x = next((rec[k] for k in ITERATION_KEYS if k in rec), None)
            y = next((rec[k] for k in TOTAL_LOSS_KEYS if k in rec), None)
            if y is None:
                terms = [v for k, v in rec.items() if k.startswith("loss") and isinstance(v, (int, float))]
                y = sum(terms) if terms else None
            if x is not None and y is not None:
                xs.append(float(x))
                ys.append(float(y))
    return xs, ys


def plot_training_curves(curves: dict[str, str | Path], output: str | Path, title: str) -> None:
    """One panel per ``{stage label: metrics.jsonl path}``, in the given order."""
    plt = _pyplot()
    n = max(1, len(curves))
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for ax, (label, path) in zip(axes.flat, curves.items()):
        xs, ys = read_training_curve(path)
        ax.plot(xs, ys, lw=1, marker="o" if len(xs) < FEW_POINTS else None, ms=3)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.set_ylabel("total loss")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=FIGURE_DPI)
    plt.close(fig)


def plot_base_novel(metrics: dict, *, setting: str, rounds: int, test: str, output: str | Path) -> None:
    """Left: class-agnostic recall (base, novel) per round. Right: base vs novel AP50 per variant."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(PANEL_SIZE[0] * 3.2, PANEL_SIZE[1]), layout="constrained")
    xs = list(range(rounds + 1))
    proposals = [metrics.get((setting, f"proposals-r{r}", "proposals")) for r in xs]
    control = metrics.get((setting, CONTROL_PROPOSALS, "proposals"))
    for split in ("base", "novel"):
        (line,) = left.plot(xs, [best_recall(p, split)[1] or float("nan") for p in proposals], marker="o", label=split)
        confident = [metric(p, "proposals", f"AR@conf_{split}") for p in proposals]
        if any(v is not None for v in confident):  # same colour, dashed: the proposals scored as objects
            left.plot(xs, [float("nan") if v is None else v for v in confident], marker="s", linestyle="--",
                      color=line.get_color(), label=f"{split}, confident")
        if control is not None and rounds >= 1:  # crosses at round 1: the student without pseudo-labels
            values = [best_recall(control, split)[1], metric(control, "proposals", f"AR@conf_{split}")]
            left.plot([1, 1], [float("nan") if v is None else v for v in values], linestyle="none", marker="x",
                      ms=8, color=line.get_color(), label=f"{split}, round 1 without pseudo-labels")
    left.set_xticks(xs)
    left.set_xlabel("distillation round (0 = teacher)")
    left.set_ylabel("class-agnostic recall")
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the panel: never over the lines
    left.grid(alpha=0.3)
    variants = [FROZEN_CLIP, NO_OBJECT_SCORE] + [f"round{r}" for r in range(rounds)] + [MAIN_VARIANT]
    variants = [v for v in variants if (setting, v, test) in metrics]
    width = 0.4
    for offset, (split, key) in zip((-width / 2, width / 2), (("base", "AP50_base"), ("novel", "AP50_novel"))):
        vals = [metric(metrics[(setting, v, test)], "segm", key) or 0.0 for v in variants]
        right.bar([i + offset for i in range(len(variants))], vals, width, label=split)
    right.set_xticks(range(len(variants)))
    right.set_xticklabels(variants, rotation=20, fontsize=8)
    right.set_ylabel(f"AP50 ({test})")
    right.legend()
    fig.suptitle(f"base vs novel ({setting})")
    fig.savefig(output, dpi=FIGURE_DPI)
    plt.close(fig)


OVERALL_ACCURACY = re.compile(r"(acc|top1)", re.I)
PER_CATEGORY = re.compile(r"per_category", re.I)


def zero_shot_figures(data: dict) -> tuple[float | None, dict[str, float]]:
    """(overall accuracy, {category: accuracy}) from ``masqclip pretrain-clip``'s metrics JSON: the
    first top-level number named like ``*acc*``/``*top1*`` and the first ``*per_category*`` mapping."""
    overall = next((float(v) for k, v in data.items()
                    if OVERALL_ACCURACY.search(k) and isinstance(v, (int, float))), None)
    per_category = next(({c: float(a) for c, a in v.items()} for k, v in data.items()
                         if PER_CATEGORY.search(k) and isinstance(v, dict)), {})
    return overall, per_category


def plot_clip_zero_shot(metrics_file: str | Path, output: str | Path) -> None:
    """Zero-shot accuracy of the small CLIP on held-out crops: one bar per category (or overall)."""
    plt = _pyplot()
    with open(metrics_file, encoding="utf-8") as fh:
        overall, per_category = zero_shot_figures(json.load(fh))
    if overall is None and not per_category:
        raise ValueError(f"{metrics_file}: no accuracy figures found")
    bars = per_category or {"all categories": overall}
    fig, ax = plt.subplots(figsize=(PANEL_SIZE[0] * 1.5, max(PANEL_SIZE[1], 0.25 * len(bars))))
    ax.barh(list(bars), list(bars.values()))
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("zero-shot crop accuracy")
    overall_text = "" if overall is None else f": {overall:.1f} overall"
    ax.set_title(f"small CLIP, zero-shot on held-out crops{overall_text}")
    fig.tight_layout()
    fig.savefig(output, dpi=FIGURE_DPI)
    plt.close(fig)


def clip_metrics_file(clip_weights: str | Path) -> Path:
    """The metrics JSON ``masqclip pretrain-clip`` writes beside its checkpoint (``tiny.pt`` -> ``tiny.json``)."""
    path = Path(clip_weights).with_suffix(".json")
    if not path.is_file():
        raise UserFileNotFoundError(f"no metrics JSON beside {clip_weights} (expected {path})")
    return path
