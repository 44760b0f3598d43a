"""Plot builders: training curves read back from metrics.jsonl, PNGs written with content, and the
CLI producing exactly the planned files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from masqclip.results import plots


def write_curve(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    return path


def test_training_curve_total_or_sum_of_loss_terms(tmp_path):
    path = write_curve(tmp_path / "a/metrics.jsonl", [
        {"iteration": 0, "total_loss": 5.0, "lr": 1e-4},
        {"iteration": 1, "loss_ce": 1.0, "loss_mask": 2.0, "loss_dice": 0.5},  # no total: summed
        {"iter": 2, "loss": 3.0},
        {"lr": 0.1},  # no iteration, no loss: skipped
    ])
    assert plots.read_training_curve(path) == ([0.0, 1.0, 2.0], [5.0, 3.5, 3.0])


def _assert_png_has_content(path):
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert np.std(image[..., :3]) > 0.01  # not a blank canvas


def test_plots_cli_writes_the_manifest_plots_with_seed_spread(tmp_path):
    from masqclip.manifest import CurveEntry, EvaluationEntry, Manifest, PlotSpec

    seeds = [0, 1]
    curves = [CurveEntry("base-novel", stage, rnd, seed, str(write_curve(
        tmp_path / f"models/s{seed}/{stage}{rnd}/metrics.jsonl",
        [{"iteration": i, "total_loss": (1.0 + seed) / (i + 1)} for i in range(20)])))
        for seed in seeds for stage, rnd in (("teacher", 0), ("student", 1), ("tuning", 1))]
    entries = []

    def metrics_file(seed, variant, test, results):
        p = tmp_path / f"m/{seed}-{variant}-{test}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(json.dumps({"results": results}))
        entries.append(EvaluationEntry("base-novel", "student", 0, seed, variant, test, "d", str(p)))

    for seed in seeds:
        for rnd in range(2):
            metrics_file(seed, f"proposals-r{rnd}", "proposals",
                         {"proposals": {"AR@100_base": 70.0, "AR@100_novel": 40.0 + 10 * rnd + seed}})
        for variant in ("masqclip", "frozen-clip", "round0"):
            metrics_file(seed, variant, "generalized", {"segm": {"AP50": 40.0, "AP50_base": 50.0, "AP50_novel": 20.0}})
    clip_metrics = {}
    for seed in seeds:
        clip_metrics[seed] = str(tmp_path / f"clip{seed}/tiny.json")
        Path(clip_metrics[seed]).parent.mkdir()
        Path(clip_metrics[seed]).write_text(json.dumps({"model_name": "masqclip-tiny", "zero_shot_top1": 93.0 - seed,
                                                        "zero_shot_per_category": {"red disc": 80.0, "sky": 100.0}}))
    plots_specs = [PlotSpec("training_base-novel.png", "training", "base-novel"),
                   PlotSpec("base_novel_base-novel.png", "base_novel", "base-novel", rounds=1, test="generalized"),
                   PlotSpec("clip_zero_shot.png", "clip_zero_shot")]
    manifest = tmp_path / "manifest.json"
    Manifest(seeds=seeds, evaluations=entries, plots=plots_specs, curves=curves, clip_metrics=clip_metrics).write(manifest)
    out = tmp_path / "plots"
    cmd = [sys.executable, "-m", "masqclip.cli", "results", "plots", "--manifest", str(manifest), "--output-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in plots_specs)
    for spec in plots_specs:
        _assert_png_has_content(out / spec.name)


def test_zero_shot_figures_from_pretrain_clip_metrics():
    data = {"model_name": "m", "steps": 10, "zero_shot_top1": 92.5, "zero_shot_per_category": {"a": 90.0, "b": 95}}
    assert plots.zero_shot_figures(data) == (92.5, {"a": 90.0, "b": 95.0})
    assert plots.zero_shot_figures({"val_accuracy": 0.5}) == (0.5, {})


def test_clip_plot_needs_accuracy_figures(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"loss": 1.0}))
    with pytest.raises(ValueError, match="no accuracy"):
        plots.plot_clip_zero_shot(bad, tmp_path / "x.png")
