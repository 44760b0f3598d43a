"""Plots for the results folder and the Snakemake report (matplotlib, Agg backend, PNG). Which
plots exist and which files they read comes from the pipeline's manifest (``masqclip.manifest``).

- ``training_<setting>.png``: one panel per trained stage, loss against iteration (from the
  ``metrics.jsonl`` each training job writes in its OUTPUT_DIR), one line per seed;
- ``base_novel_<setting>.png``: class-agnostic base/novel recall by distillation round, and base vs
  novel AP50 of every evaluated model variant (means over seeds, error bars = standard deviation);
- ``clip_zero_shot.png``: the small CLIP's zero-shot crop accuracy (synthetic world only; mean and
  spread over seeds).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import UserError, UserFileNotFoundError
from ..manifest import (CONTROL_PROPOSALS, FROZEN_CLIP, MAIN_VARIANT, NO_OBJECT_SCORE, PROPOSALS_TEST, Manifest,
                        proposals_variant, round_variant)
from .tables import _mean_std, best_recall, load_metrics, metric

ITERATION_KEYS = ("iteration", "iter", "step")
TOTAL_LOSS_KEYS = ("total_loss", "loss")
FIGURE_DPI = 100
PANEL_SIZE = (4.0, 3.0)  # inches per subplot
MAX_COLUMNS = 3  # panels per row of the training-curve figure
FEW_POINTS = 20  # curves with fewer logged points get markers (a single point is otherwise invisible)


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


def plot_training_curves(curves: dict[str, str | Path | dict[int, str | Path]], output: str | Path, title: str) -> None:
    """One panel per ``{stage label: metrics.jsonl path or {seed: path}}``, in the given order; a line per seed."""
    plt = _pyplot()
    n = max(1, len(curves))
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), squeeze=False)
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    for ax, (label, by_seed) in zip(axes.flat, curves.items()):
        if not isinstance(by_seed, dict):
            by_seed = {None: by_seed}
        for seed, path in by_seed.items():
            xs, ys = read_training_curve(path)
            ax.plot(xs, ys, lw=1, marker="o" if len(xs) < FEW_POINTS else None, ms=3, label=f"seed {seed}")
        if len(by_seed) > 1:
            ax.legend(fontsize=7)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.set_ylabel("total loss")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output, dpi=FIGURE_DPI)
    plt.close(fig)


def _spread(values: list[float | None]) -> tuple[float, float]:
    """(mean, standard deviation) over seeds for plotting: NaN where nothing was measured, 0 spread
    for a single value."""
    mean, std = _mean_std(values)
    return (float("nan") if mean is None else mean), (0.0 if std is None else std)


def plot_base_novel(metrics: dict[int, dict], *, setting: str, rounds: int, test: str, output: str | Path) -> None:
    """Left: class-agnostic recall (base, novel) per round. Right: base vs novel AP50 per variant.
    ``metrics``: seed -> ``{(setting, variant, test): results}``; points are means over seeds with
    the standard deviation as error bars."""
    plt = _pyplot()
    seeds = list(metrics.values()) or [{}]
    fig, (left, right) = plt.subplots(1, 2, figsize=(PANEL_SIZE[0] * 3.2, PANEL_SIZE[1]), layout="constrained")
    xs = list(range(rounds + 1))
    get = lambda m, v, t: m.get((setting, v, t))  # noqa: E731
    has_control = any(get(m, CONTROL_PROPOSALS, PROPOSALS_TEST) is not None for m in seeds)
    for split in ("base", "novel"):
        recall = [_spread([best_recall(get(m, proposals_variant(r), PROPOSALS_TEST), split)[1] for m in seeds])
                  for r in xs]
        line = left.errorbar(xs, [m for m, _ in recall], yerr=[s for _, s in recall], marker="o", capsize=3,
                             label=split)
        colour = line.lines[0].get_color()
        confident = [[metric(get(m, proposals_variant(r), PROPOSALS_TEST), "proposals", f"AR@conf_{split}")
                      for m in seeds] for r in xs]
        if any(v is not None for per_round in confident for v in per_round):  # dashed: proposals scored as objects
            conf = [_spread(v) for v in confident]
            left.errorbar(xs, [m for m, _ in conf], yerr=[s for _, s in conf], marker="s", linestyle="--",
                          capsize=3, color=colour, label=f"{split}, confident")
        if has_control and rounds >= 1:  # crosses at round 1: the student without pseudo-labels
            control = [get(m, CONTROL_PROPOSALS, PROPOSALS_TEST) for m in seeds]
            values = [_spread([best_recall(c, split)[1] for c in control]),
                      _spread([metric(c, "proposals", f"AR@conf_{split}") for c in control])]
            left.errorbar([1, 1], [m for m, _ in values], yerr=[s for _, s in values], linestyle="none", marker="x",
                          ms=8, capsize=3, color=colour, label=f"{split}, round 1 without pseudo-labels")
    left.set_xticks(xs)
    left.set_xlabel("distillation round (0 = teacher)")
    left.set_ylabel("class-agnostic recall")
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the panel: never over the lines
    left.grid(alpha=0.3)
    variants = [FROZEN_CLIP, NO_OBJECT_SCORE] + [round_variant(r) for r in range(rounds)] + [MAIN_VARIANT]
    variants = [v for v in variants if any(get(m, v, test) is not None for m in seeds)]
    width = 0.4
    for offset, (split, key) in zip((-width / 2, width / 2), (("base", "AP50_base"), ("novel", "AP50_novel"))):
        vals = [_spread([metric(get(m, v, test), "segm", key) for m in seeds]) for v in variants]
        right.bar([i + offset for i in range(len(variants))], [0.0 if math.isnan(m) else m for m, _ in vals], width,
                  yerr=[s for _, s in vals], capsize=3, label=split)
    right.set_xticks(range(len(variants)))
    right.set_xticklabels(variants, rotation=20, fontsize=8)
    right.set_ylabel(f"AP50 ({test})")
    right.legend()
    title = f"base vs novel ({setting})" + (f", mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "")
    fig.suptitle(title)
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


def plot_clip_zero_shot(metrics_files: list[str | Path] | str | Path, output: str | Path) -> None:
    """Zero-shot accuracy of the small CLIP on held-out crops: one bar per category (or overall);
    with several seeds' metrics files, the mean with the standard deviation as error bars."""
    plt = _pyplot()
    files = [metrics_files] if isinstance(metrics_files, (str, Path)) else list(metrics_files)
    figures = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                overall, per_category = zero_shot_figures(json.load(fh))
        except FileNotFoundError:
            raise UserFileNotFoundError(f"the small CLIP's metrics file not found: {path}") from None
        except (json.JSONDecodeError, AttributeError) as err:
            raise UserError(f"{path}: not a 'masqclip pretrain-clip' metrics JSON ({err})") from None
        if overall is None and not per_category:
            raise ValueError(f"{path}: no accuracy figures found")
        figures.append((overall, per_category or {"all categories": overall}))
    names = list(figures[0][1])
    bars = {n: _spread([f[1].get(n) for f in figures]) for n in names}
    overall_mean, _ = _mean_std([f[0] for f in figures])
    fig, ax = plt.subplots(figsize=(PANEL_SIZE[0] * 1.5, max(PANEL_SIZE[1], 0.25 * len(bars))))
    ax.barh(list(bars), [m for m, _ in bars.values()], xerr=[s for _, s in bars.values()] if len(files) > 1 else None)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("zero-shot crop accuracy")
    overall_text = "" if overall_mean is None else f": {overall_mean:.1f} overall"
    seeds_text = f" (mean of {len(files)} seeds)" if len(files) > 1 else ""
    ax.set_title(f"small CLIP, zero-shot on held-out crops{overall_text}{seeds_text}")
    fig.tight_layout()
    fig.savefig(output, dpi=FIGURE_DPI)
    plt.close(fig)


def make_plots(manifest: Manifest, output_dir: str | Path, metrics: dict[int, dict] | None = None) -> list[Path]:
    """Every plot the manifest lists, into ``output_dir``; returns the paths written."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = load_metrics(manifest.evaluations)
    written = []
    for spec in manifest.plots:
        target = out / spec.name
        if spec.kind == "training":
            curves: dict[str, dict[int, str]] = {}
            for c in manifest.curves:  # the plan lists them in lineage order
                if c.setting == spec.setting:
                    curves.setdefault(c.label, {})[c.seed] = c.path
            plot_training_curves(curves, target, f"training ({spec.setting})")
        elif spec.kind == "base_novel":
            plot_base_novel({s: metrics.get(s, {}) for s in manifest.seeds}, setting=spec.setting, rounds=spec.rounds,
                            test=spec.test, output=target)
        elif spec.kind == "clip_zero_shot":
            plot_clip_zero_shot([manifest.clip_metrics[s] for s in sorted(manifest.clip_metrics)], target)
        else:
            raise UserError(f"unknown plot kind {spec.kind!r} in the manifest")
        written.append(target)
    return written
