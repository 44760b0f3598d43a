"""``masqclip results timeline`` on real Snakemake logs: the default run's log (tests/data, the run
whose job times the README discusses) gives known job times, packed lanes, the per-stage table and
the critical path; a log cut off mid-run (a killed run) still plots; bad input is one line, exit 2."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from masqclip.cli import main as cli
from masqclip.results.timeline import parse_log

LOG = Path(__file__).parent / "data" / "default-run.snakemake.log"


def test_default_run_log_known_answers():
    tl = parse_log(str(LOG))
    assert len(tl.jobs) == 29 and not any(j.failed for j in tl.jobs)
    by = {(j.rule, j.wildcards.get("setting"), j.wildcards.get("round")): j for j in tl.jobs}
    teacher = by[("train_teacher", "base-novel", None)]
    assert (teacher.start, teacher.end) == (13, 107)  # [18:34:55] .. [18:36:29], the first job at 18:34:42
    assert by[("train_control", "base-novel", "1")].duration == 32
    assert tl.started == -5 and tl.end == 346 and tl.wall == 351  # Snakemake's "Elapsed time: 0:05:51"
    rows = {r["stage"]: r for r in tl.stage_rows()}
    assert rows["evaluation"]["jobs"] == 11 and rows["teacher"]["job_seconds"] == 94 + 103
    assert sum(r["job_seconds"] for r in rows.values()) == sum(j.duration for j in tl.jobs)
    path = [(j.rule, j.wildcards.get("round")) for j in tl.critical_path()]
    assert path[:6] == [("prepare", None), ("train_teacher", None), ("train_student", "1"), ("train_student", "2"),
                        ("train_tuning", "2"), ("evaluate", None)]
    for a, b in zip(tl.critical_path(), tl.critical_path()[1:]):  # each waits for the one before it
        assert a.end <= b.start and set(a.outputs) & set(b.inputs)


def test_lanes_never_overlap_and_match_the_cores():
    tl = parse_log(str(LOG))
    lanes = tl.lanes()
    assert max(lanes) + 1 == 2  # the run had 2 cores and every job took one
    for lane in set(lanes):
        jobs = sorted((j for j, l in zip(tl.jobs, lanes) if l == lane), key=lambda j: j.start)
        assert all(a.end <= b.start for a, b in zip(jobs, jobs[1:]))


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_cli_writes_the_plot_and_the_table(tmp_path, ext, capsys):
    out = tmp_path / f"timeline.{ext}"
    assert cli(["results", "timeline", "--log", str(LOG), "--output", str(out)]) == 0
    table = (tmp_path / "timeline.md").read_text()
    assert "| evaluation | 11 | 138 |" in table and "Critical path" in table and "5 min 51 s" in table
    assert table in capsys.readouterr().out
    if ext == "png":
        with Image.open(out) as image:
            assert image.size[0] > 1000 and image.size[1] > 150
    else:
        assert "<svg" in out.read_text()[:500]


def test_newest_log_by_default_and_a_killed_run(tmp_path, monkeypatch, capsys):
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    shutil.copy(LOG, logs / "2026-01-01T000000.000000.snakemake.log")
    text = LOG.read_text().splitlines()
    cut = next(i for i, line in enumerate(text) if line.startswith("Finished jobid: 7 "))  # a student finished
    (logs / "2026-01-02T000000.000000.snakemake.log").write_text("\n".join(text[:cut + 20]) + "\n")
    monkeypatch.chdir(tmp_path)
    assert cli(["results", "timeline", "--output", "t.png"]) == 0
    assert "from Snakemake's start" in capsys.readouterr().out
    tl = parse_log(str(logs / "2026-01-02T000000.000000.snakemake.log"))
    running = [j for j in tl.jobs if j.unfinished]  # still running when the log stops: they end with it
    assert 5 <= len(tl.jobs) < 29 and running and all(j.end == tl.end for j in running)
    assert Path("t.png").stat().st_size > 1000


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["results", "timeline"]) == 2
    assert "no Snakemake log" in capsys.readouterr().err
    (tmp_path / "empty.log").write_text("Building DAG of jobs...\nNothing to be done.\n")
    assert cli(["results", "timeline", "--log", "empty.log"]) == 2
    assert "no job found" in capsys.readouterr().err
    assert cli(["results", "timeline", "--log", str(LOG), "--output", "t.pdf"]) == 2
    err = capsys.readouterr().err
    assert "must end in .png or .svg" in err and err.count("\n") == 1
