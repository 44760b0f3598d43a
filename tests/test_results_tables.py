"""Table builders on hand-written metrics JSONs: known answers for every cell, the paper rows and
differences, mean +- std over seeds, the three file formats, and the CLI reading a manifest."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from masqclip.manifest import EvaluationEntry, Manifest, TableSpec
from masqclip.results.tables import (DIFF, OURS, PAPER, Table, base_novel_table, build_tables, combine_seeds,
                                     cross_dataset_table, frozen_clip_table, load_metrics, object_score_table,
                                     rounds_table, write_tables)

TABLES = [TableSpec("base_novel", "base_novel", "base-novel", paper=True),
          TableSpec("cross_dataset", "cross_dataset", "cross-dataset", paper=True),
          TableSpec("ablation_rounds_base-novel", "rounds", "base-novel", paper=True, rounds=2, test="generalized"),
          TableSpec("ablation_object_score_base-novel", "object_score", "base-novel", paper=True, tests=("generalized",)),
          TableSpec("ablation_frozen_clip_base-novel", "frozen_clip", "base-novel",
                    tests=("generalized", "constrained_novel"))]


def write_metrics(root, setting, variant, test, results, seed=0):
    """A metrics file anywhere (its name means nothing) and its manifest entry."""
    path = root / f"seed{seed}-{setting}-{variant}-{test}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dataset": "d", "config": "c.yaml", "weights": "w.pth", "results": results}))
    return EvaluationEntry(setting=setting, stage="tuning", round=0, seed=seed, variant=variant, test=test,
                           dataset="d", metrics=str(path))


@pytest.fixture
def metrics_files(tmp_path):
    m = tmp_path / "metrics"
    seg = lambda ap50, base=None, novel=None: {"segm": {"AP": ap50 / 2, "AP50": ap50,  # noqa: E731
                                                        **({"AP50_base": base, "AP50_novel": novel} if base else {})}}
    files = [
        write_metrics(m, "base-novel", "masqclip", "constrained_base", seg(52.0)),
        write_metrics(m, "base-novel", "masqclip", "constrained_novel", seg(30.5)),
        write_metrics(m, "base-novel", "masqclip", "generalized", seg(45.0, 50.0, 30.0)),
        write_metrics(m, "base-novel", "no-objscore", "generalized", seg(35.0, 41.0, 12.0)),
        write_metrics(m, "base-novel", "frozen-clip", "generalized", seg(20.0, 25.0, 8.0)),
        write_metrics(m, "base-novel", "frozen-clip", "constrained_novel", seg(9.0)),
        write_metrics(m, "base-novel", "round0", "generalized", seg(40.0, 49.0, 21.0)),
        write_metrics(m, "base-novel", "round1", "generalized", seg(43.0, 50.0, 27.0)),
        write_metrics(m, "cross-dataset", "masqclip", "ade150_panoptic",
                      {"panoptic_seg": {"PQ": 22.0, "PQ_th": 20.0, "PQ_st": 26.0}, "sem_seg": {"mIoU": 29.0}}),
        write_metrics(m, "cross-dataset", "masqclip", "ade847", {"sem_seg": {"mIoU": 11.0}}),
        write_metrics(m, "cross-dataset", "masqclip", "pc59", {"sem_seg": {"mIoU": 55.0}}),
        write_metrics(m, "cross-dataset", "masqclip", "pc459", {"sem_seg": {"mIoU": 19.0}}),
    ]
    for rnd, (novel, base) in enumerate(((41.0, 70.0), (55.0, 71.0), (61.5, 72.0))):
        files.append(write_metrics(m, "base-novel", f"proposals-r{rnd}", "proposals",
                                   {"proposals": {"AR@10": 1.0, "AR@100": 2.0, "AR@10_novel": 0.5,
                                                  "AR@100_novel": novel, "AR@100_base": base,
                                                  "AR@conf_novel": novel - 10, "conf_score_threshold": 0.5}}))
    return files


def test_base_novel_table_known_answers(metrics_files):
    table = base_novel_table(load_metrics(metrics_files)[0], paper=True)
    assert dict(table.rows)[OURS] == [52.0, 30.5, 50.0, 30.0, 45.0]
    assert dict(table.rows)[PAPER] == [51.2, 34.3, 51.0, 31.9, 46.0]
    assert dict(table.rows)[DIFF] == pytest.approx([0.8, -3.8, -1.0, -1.9, -1.0])


def test_cross_dataset_table_takes_a150_from_the_panoptic_run_when_alone(metrics_files):
    table = cross_dataset_table(load_metrics(metrics_files)[0], paper=True)
    assert dict(table.rows)[OURS] == [29.0, 11.0, 55.0, 19.0, 22.0, 20.0, 26.0]
    assert table.value(DIFF, "PC-59 mIoU (gt classes)") == pytest.approx(55.0 - 57.8)
    # A dedicated semantic evaluation of ADE20K-150 wins over the panoptic run's mIoU.
    metrics = load_metrics(metrics_files)[0]
    metrics[("cross-dataset", "masqclip", "ade150")] = {"sem_seg": {"mIoU": 31.0}}
    assert cross_dataset_table(metrics).value(OURS, "A-150 mIoU (gt classes)") == 31.0


def test_cross_dataset_table_miou_convention_is_one_switch(metrics_files):
    metrics = load_metrics(metrics_files)[0]
    for key, test in (("ade150_panoptic", 28.0), ("ade847", 10.0), ("pc59", 50.0), ("pc459", 17.0)):
        metrics[("cross-dataset", "masqclip", key)]["sem_seg"]["mIoU_d2v06"] = test
    gt = cross_dataset_table(metrics, paper=True)
    old = cross_dataset_table(metrics, paper=True, miou_convention="d2v06")
    assert gt.columns[:4] == ["A-150 mIoU (gt classes)", "A-847 mIoU (gt classes)", "PC-59 mIoU (gt classes)",
                              "PC-459 mIoU (gt classes)"]
    assert old.columns[:4] == ["A-150 mIoU (d2 v0.6)", "A-847 mIoU (d2 v0.6)", "PC-59 mIoU (d2 v0.6)",
                               "PC-459 mIoU (d2 v0.6)"]
    assert dict(gt.rows)[OURS][:4] == [29.0, 11.0, 55.0, 19.0]
    assert dict(old.rows)[OURS] == [28.0, 10.0, 50.0, 17.0, 22.0, 20.0, 26.0]  # PQ unaffected
    assert dict(old.rows)[PAPER] == dict(gt.rows)[PAPER]
    assert "ground truth" in gt.notes[-1] and "v0.6" in old.notes[-1]
    assert "_mIoU = detectron2 v0.6's" in old.to_markdown()


def test_missing_evaluations_are_blank_not_zero(metrics_files):
    table = cross_dataset_table({})
    assert dict(table.rows)[OURS] == [None] * 7
    assert "| MasQCLIP (ours) | - | - |" in table.to_markdown()
    assert table.to_csv().splitlines()[1] == "MasQCLIP (ours)" + "," * 7


def test_rounds_table_uses_largest_k_novel_recall_and_final_model_for_round_k(metrics_files):
    table = rounds_table(load_metrics(metrics_files)[0], setting="base-novel", rounds=2, test="generalized", paper=True)
    assert [label for label, _ in table.rows] == ["teacher (round 0)", "student round 1", "student round 2"]
    assert [vals for _, vals in table.rows] == [[41.0, 31.0, 21.0, 22.6], [55.0, 45.0, 27.0, 26.1],
                                                [61.5, 51.5, 30.0, 31.9]]
    assert "AR@100_novel" in table.notes[0] and ">= 0.5" in table.notes[0]


def test_rounds_table_control_row(metrics_files, tmp_path):
    control = write_metrics(tmp_path / "metrics", "base-novel", "proposals-control", "proposals",
                            {"proposals": {"AR@100_novel": 40.0, "AR@conf_novel": 12.5}})
    table = rounds_table(load_metrics([*metrics_files, control])[0], setting="base-novel", rounds=2, test="generalized",
                         paper=True)
    assert table.rows[-1] == ("round 1 without pseudo-labels (control)", [40.0, 12.5, None, None])
    assert len(table.rows) == 4 and "no pseudo-labels" in table.notes[-1]


def test_object_score_and_frozen_clip_tables(metrics_files):
    metrics = load_metrics(metrics_files)[0]
    obj = object_score_table(metrics, setting="base-novel", tests=["generalized"], paper=True)
    assert obj.rows == [("CLIP scores only", [12.0, 11.3]), ("with object score", [30.0, 22.6])]
    frozen = frozen_clip_table(metrics, setting="base-novel", tests=["generalized", "constrained_novel"])
    assert frozen.columns == ["base AP50 (generalized)", "novel AP50 (generalized)", "all AP50 (generalized)",
                              "novel AP50 (constrained_novel)"]
    assert frozen.rows == [("frozen CLIP", [25.0, 8.0, 20.0, 9.0]), ("MasQ-Tuning", [50.0, 30.0, 45.0, 30.5])]


def test_formats_round_trip(tmp_path, metrics_files):
    tables = build_tables(Manifest(seeds=[0], evaluations=metrics_files, tables=TABLES))
    assert [t.name for t in tables] == [t.name for t in TABLES]
    written = write_tables(tables, tmp_path / "tables")
    assert len(written) == 4 * len(tables)
    rows = list(csv.reader(io.StringIO((tmp_path / "tables/base_novel.csv").read_text())))
    assert rows[0] == ["", *tables[0].columns] and rows[1][1] == "52.0000" and rows[3][0] == DIFF
    tex = (tmp_path / "tables/base_novel.tex").read_text()
    assert "\\begin{tabular}{lrrrrr}" in tex and "MasQCLIP (ours) & 52.0 & 30.5 & 50.0 & 30.0 & 45.0 \\\\" in tex
    md = (tmp_path / "tables/ablation_rounds_base-novel.md").read_text()
    assert "| student round 2 | 61.5 | 51.5 | 30.0 | 31.9 |" in md


def test_html_table_is_a_captioned_table_of_the_numbers():
    table = Table("t", "AP50 <base> & novel", ["base", "novel"], notes=["a note & more"])
    table.add("ours", [52.04, None])
    table.add("paper", [51.0, 34.3])
    html = table.to_html()
    assert "<caption>AP50 &lt;base&gt; &amp; novel</caption>" in html
    assert "<thead><tr><th></th><th>base</th><th>novel</th></tr></thead>" in html
    assert "<tr><th>ours</th><td>52.0</td><td>-</td></tr>" in html
    assert "<tr><th>paper</th><td>51.0</td><td>34.3</td></tr>" in html
    assert '<p class="note">a note &amp; more</p>' in html


def test_front_page_inlines_tables_and_embeds_plots(tmp_path):
    import base64
    import re

    from masqclip.results.front import front_page

    table = Table("t", "Headline", ["novel AP50"])
    table.add("ours", [31.9])
    (tmp_path / "t.html").write_text(table.to_html())
    png = tmp_path / "base_novel_base-novel.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page = front_page([tmp_path / "t.html", png])
    assert "<tr><th>ours</th><td>31.9</td></tr>" in page and page.count("<meta") == 0
    data = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(data) == png.read_bytes()
    assert "Distillation rounds" in page
    with pytest.raises(ValueError, match="not .csv"):
        front_page([tmp_path / "t.csv"])


def test_seeds_give_mean_and_sample_std_with_per_seed_values_in_the_csv(tmp_path):
    seg = lambda novel: {"segm": {"AP50": 40.0, "AP50_base": 50.0, "AP50_novel": novel}}  # noqa: E731
    entries = [write_metrics(tmp_path, "base-novel", "masqclip", "generalized", seg(novel), seed=seed)
               for seed, novel in ((0, 15.0), (1, 13.0), (2, 14.0))]
    manifest = Manifest(seeds=[0, 1, 2], evaluations=entries, tables=TABLES[:1])
    (table,) = build_tables(manifest)
    assert table.value(OURS, "generalized novel") == pytest.approx(14.0)
    assert table.std[OURS][3] == pytest.approx(1.0)  # sample std of 15, 13, 14
    assert table.value(DIFF, "generalized novel") == pytest.approx(14.0 - 31.9)
    assert table.std[DIFF][3] == pytest.approx(1.0) and PAPER not in table.std  # the paper does not vary
    assert table.value(OURS, "constrained base") is None and table.std[OURS][0] is None  # never measured
    assert "| MasQCLIP (ours) | - | - | 50.0 ± 0.0 | 14.0 ± 1.0 | 40.0 ± 0.0 |" in table.to_markdown()
    assert "14.0 $\\pm$ 1.0" in table.to_latex() and "seeds 0, 1, 2" in table.notes[-1]
    rows = {r[0]: r[1:] for r in csv.reader(io.StringIO(table.to_csv()))}
    assert rows[OURS][3] == "14.0000" and rows[f"{OURS} (std)"][3] == "1.0000"
    assert [rows[f"{OURS} (seed {s})"][3] for s in (0, 1, 2)] == ["15.0000", "13.0000", "14.0000"]
    assert f"{PAPER} (seed 0)" not in rows
    single = combine_seeds({0: base_novel_table(load_metrics(entries)[0])})
    assert not single.std and "±" not in single.to_markdown()


def test_latex_escapes_special_characters():
    table = Table("t", "50% of A_B & C", ["x_1"])
    table.add("r#1", [1.0])
    tex = table.to_latex()
    assert "50\\% of A\\_B \\& C" in tex and "x\\_1" in tex and "r\\#1 & 1.0" in tex
    with pytest.raises(ValueError, match="2 values for 1 columns"):
        table.add("bad", [1.0, 2.0])


def test_cli_writes_all_tables(tmp_path, metrics_files):
    manifest = tmp_path / "manifest.json"
    Manifest(seeds=[0], evaluations=metrics_files, tables=TABLES).write(manifest)
    cmd = [sys.executable, "-m", "masqclip.cli", "results", "tables", "--manifest", str(manifest),
           "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 20 and "cross_dataset.tex" in names and "cross_dataset.html" in names
    assert "| MasQCLIP (paper) | 30.4 | 10.7 | 57.8 | 18.2 | 23.3 | 21.2 | 27.7 |" in \
        (tmp_path / "out/cross_dataset.md").read_text()
    # the mIoU convention is the manifest's (the config's miou_convention) unless the command says otherwise
    assert "A-150 mIoU (gt classes)" in (tmp_path / "out/cross_dataset.md").read_text()
    proc = subprocess.run(cmd + ["--miou-convention", "d2v06"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "A-150 mIoU (d2 v0.6)" in (tmp_path / "out/cross_dataset.md").read_text()
    # a metrics file the manifest lists but that is gone: one line naming it, exit code 2
    Path(metrics_files[0].metrics).unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and metrics_files[0].metrics in proc.stderr and "Traceback" not in proc.stderr
