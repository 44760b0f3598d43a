"""A run's timeline from its Snakemake log: when each job ran, where the minutes go per stage, and
the critical path (the chain of jobs that decided when the run ended).

The log (``.snakemake/log/*.snakemake.log``, or Snakemake's own output) gives, per job, a
``[date]`` line followed by ``rule NAME:`` / ``localrule NAME:`` and its indented fields (``input``,
``output``, ``jobid``, ``benchmark``, ``wildcards``), and a ``[date]`` line followed by ``Finished
jobid: N`` when it ends (``Error in rule NAME:`` when it fails). Times have the log's one-second
resolution. A job's CPU seconds come from its benchmark file (``cpu_time``) when it has one.
"""
from __future__ import annotations

import csv
import datetime as _dt
import glob
import os
import re
from dataclasses import dataclass, field

from ..errors import UserError

_STAMP = re.compile(r"^\[(\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4})\]\s*$")
_RULE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_FIELD = re.compile(r"^\s+(\w+): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
_ERROR = re.compile(r"^Error in rule (\w+):\s*$")
_HEADER_DATE = re.compile(r"^\s+Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")

# Stage of each rule (the colours of the plot, the rows of the table); other rules are their own stage.
STAGES = {"prepare": "data", "pretrain_clip": "small CLIP", "train_teacher": "teacher", "train_student": "students",
          "train_control": "control", "train_tuning": "MasQ-Tuning", "evaluate": "evaluation",
          "qualitative": "qualitative", "manifest": "report", "tables": "report", "plots": "report",
          "front_page": "report", "all": "report"}
STAGE_ORDER = ("data", "small CLIP", "teacher", "students", "control", "MasQ-Tuning", "evaluation", "qualitative",
               "report")
COLOURS = {"data": "#8c8c8c", "small CLIP": "#9467bd", "teacher": "#1f77b4", "students": "#2ca02c",
           "control": "#98df8a", "MasQ-Tuning": "#ff7f0e", "evaluation": "#d62728", "qualitative": "#e377c2",
           "report": "#17becf"}
STARTUP_COLOUR = "#dddddd"


def stage_of(rule: str) -> str:
    """The stage a rule belongs to (``evaluate_<model>`` rules: "evaluation")."""
    if rule.startswith("evaluate"):
        return STAGES["evaluate"]
    return STAGES.get(rule, rule)


@dataclass
class Job:
    jobid: int
    rule: str
    start: float  # seconds since the run started
    end: float | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    wildcards: dict = field(default_factory=dict)
    benchmark: str = ""
    failed: bool = False
    unfinished: bool = False  # still running when the log stops (a killed run); ends with the log
    cpu_seconds: float | None = None

    @property
    def stage(self) -> str:
        return stage_of(self.rule)

    @property
    def duration(self) -> float:
        return (self.end if self.end is not None else self.start) - self.start

    def label(self, seeds: bool = True) -> str:
        """Short bar label: the stage and the wildcards that tell jobs apart (not signatures; the seed
        only when ``seeds``)."""
        if self.rule.startswith("evaluate_"):
            words = self.rule[len("evaluate_"):].split("_")
            words = [w for w in words if seeds or not re.fullmatch(r"seed\d+", w)]
            return "eval " + "-".join(words).replace("-seed", " seed").replace("novel-", "novel ") \
                .replace("dataset-", "dataset ")
        names = {"pretrain_clip": "small CLIP", "train_tuning": "tuning", "front_page": "front page"}
        parts = [names.get(self.rule, self.rule.replace("train_", "").replace("_", " "))]
        for key, value in self.wildcards.items():
            if key == "sig" or (key == "seed" and not seeds):
                continue
            parts.append({"round": f"r{value}", "seed": f"seed{value}", "index": f"#{value}"}.get(key, value))
        return " ".join(parts)


@dataclass
class Timeline:
    jobs: list  # of Job, by start time
    started: float  # Snakemake's own start (the log header), seconds relative to the first job (<= 0)
    end: float  # the last job's end
    log: str = ""

    @property
    def several_seeds(self) -> bool:
        return len({j.wildcards.get("seed") for j in self.jobs if "seed" in j.wildcards}) > 1

    @property
    def wall(self) -> float:
        """Seconds from Snakemake's start to the last job's end."""
        return self.end - self.started

    def critical_path(self) -> list:
        """The jobs, first to last, that decided the end: from the last job to finish, back through
        the input it waited for longest (the producer of one of its inputs that finished last)."""
        producers = {}
        for job in self.jobs:
            for path in job.outputs:
                producers[path] = job
        finished = [j for j in self.jobs if j.end is not None]
        if not finished:
            return []
        job = max(finished, key=lambda j: (j.end, j.start))
        path = [job]
        while True:
            before = [producers[p] for p in job.inputs if p in producers and producers[p] is not job]
            before = [b for b in before if b.end is not None and b.end <= job.start + 1e-9]
            if not before:
                break
            job = max(before, key=lambda j: j.end)
            path.append(job)
        return path[::-1]

    def lanes(self) -> list:
        """Lane index per job (same order as ``jobs``): each job in the first lane free at its start."""
        ends: list[float] = []
        out = []
        for job in self.jobs:
            end = job.end if job.end is not None else self.end
            lane = next((i for i, e in enumerate(ends) if e <= job.start), None)
            if lane is None:
                ends.append(end)
                lane = len(ends) - 1
            else:
                ends[lane] = end
            out.append(lane)
        return out

    def stage_rows(self) -> list:
        """Per stage: jobs, job-seconds, share of all job-seconds, CPU seconds (where benchmarked),
        seconds on the critical path."""
        critical = {id(j) for j in self.critical_path()}
        total = sum(j.duration for j in self.jobs) or 1.0
        stages = sorted({j.stage for j in self.jobs},
                        key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
        rows = []
        for stage in stages:
            mine = [j for j in self.jobs if j.stage == stage]
            seconds = sum(j.duration for j in mine)
            cpu = [j.cpu_seconds for j in mine if j.cpu_seconds is not None]
            rows.append({"stage": stage, "jobs": len(mine), "job_seconds": seconds, "share": seconds / total,
                         "cpu_seconds": sum(cpu) if cpu else None, "cpu_jobs": len(cpu),
                         "critical_seconds": sum(j.duration for j in mine if id(j) in critical)})
        return rows

    def markdown(self) -> str:
        """The per-stage table, the critical path and the totals, as Markdown."""
        rows = self.stage_rows()
        lines = ["| stage | jobs | job-seconds | share | CPU seconds | on the critical path (s) |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            cpu = "" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.0f}" + (
                "" if r["cpu_jobs"] == r["jobs"] else f" ({r['cpu_jobs']} of {r['jobs']} jobs)")
            lines.append(f"| {r['stage']} | {r['jobs']} | {r['job_seconds']:.0f} | {100 * r['share']:.0f}% | {cpu} "
                         f"| {r['critical_seconds']:.0f} |")
        busy = sum(r["job_seconds"] for r in rows)
        cpu_all = [r["cpu_seconds"] for r in rows if r["cpu_seconds"] is not None]
        cpu_jobs = sum(r["cpu_jobs"] for r in rows)
        njobs = sum(r["jobs"] for r in rows)
        cpu = "" if not cpu_all else f"{sum(cpu_all):.0f}" + ("" if cpu_jobs == njobs else f" ({cpu_jobs} of {njobs} jobs)")
        lines.append(f"| all | {njobs} | {busy:.0f} | 100% | {cpu} | {sum(r['critical_seconds'] for r in rows):.0f} |")
        path = self.critical_path()
        steps, waited, previous = [], 0.0, None
        for job in path:
            if previous is not None and job.start > previous.end:
                waited += job.start - previous.end
            steps.append(f"{job.label(self.several_seeds)} {job.duration:.0f} s")
            previous = job
        first = self.jobs[0].start if self.jobs else 0.0
        lines += ["", f"Wall time {_mmss(self.wall)} from Snakemake's start ({_mmss(first - self.started)} before the "
                      f"first job); {len(self.jobs)} jobs, {busy / max(self.end - first, 1e-9):.2f} jobs running on "
                      "average.",
                  f"Critical path ({_mmss(sum(j.duration for j in path))} of jobs, {waited:.0f} s waiting for a free "
                  f"core between them): " + " -> ".join(steps) + "."]
        return "\n".join(lines) + "\n"


def _mmss(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s"


def newest_log(workdir: str = ".") -> str:
    """The newest ``.snakemake/log/*.snakemake.log`` under ``workdir``."""
    logs = glob.glob(os.path.join(workdir, ".snakemake", "log", "*.snakemake.log"))
    if not logs:
        raise UserError(f"no Snakemake log in {os.path.join(workdir, '.snakemake', 'log')} (run the workflow "
                        "first, or pass --log FILE)")
    return max(logs, key=lambda p: (os.path.getmtime(p), p))


def _paths(text: str) -> list:
    return [p.strip() for p in text.split(", ") if p.strip()]


def parse_log(path: str, workdir: str | None = None) -> Timeline:
    """The jobs of a Snakemake log. ``workdir``: where the benchmark paths are relative to (default:
    the folder holding ``.snakemake`` for a log under ``.snakemake/log``, else the log's folder)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        raise UserError(f"cannot read the Snakemake log {path}: {err.strerror or err}") from None
    if workdir is None:
        folder = os.path.dirname(os.path.abspath(path))
        workdir = (os.path.dirname(os.path.dirname(folder))
                   if os.path.basename(folder) == "log" and os.path.basename(os.path.dirname(folder)) == ".snakemake"
                   else folder)
    header = None
    stamp = None
    jobs: dict[int, Job] = {}
    block = None  # (rule, time, fields, failed) of the job block being read
    times = []

    def close_block():
        nonlocal block
        if block is None:
            return
        rule, when, fields, failed = block
        block = None
        if "jobid" not in fields:
            return
        jobid = int(fields["jobid"])
        if failed:
            if jobid in jobs:
                jobs[jobid].end, jobs[jobid].failed = when, True
            return
        wildcards = dict(kv.split("=", 1) for kv in _paths(fields.get("wildcards", "")) if "=" in kv)
        jobs[jobid] = Job(jobid=jobid, rule=rule, start=when, inputs=_paths(fields.get("input", "")),
                          outputs=_paths(fields.get("output", "")), wildcards=wildcards,
                          benchmark=fields.get("benchmark", ""))

    for line in lines:
        m = _HEADER_DATE.match(line)
        if m and header is None:
            header = _dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            continue
        if block is not None:
            f = _FIELD.match(line)
            if f:
                block[2].setdefault(f.group(1), f.group(2).strip())
                continue
            close_block()
        m = _STAMP.match(line)
        if m:
            stamp = _dt.datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            times.append(stamp)
            continue
        m = _RULE.match(line)
        if m and stamp is not None:
            block = (m.group(1), stamp, {}, False)
            continue
        m = _ERROR.match(line)
        if m and stamp is not None:
            block = (m.group(1), stamp, {}, True)
            continue
        m = _FINISHED.match(line)
        if m and int(m.group(1)) in jobs and stamp is not None:
            jobs[int(m.group(1))].end = stamp
    close_block()
    if not jobs:
        raise UserError(f"{path}: no job found (not a Snakemake log of a run, or a dry run)")
    t0 = min(j.start for j in jobs.values())
    last = max(times)
    out = []
    for job in sorted(jobs.values(), key=lambda j: (j.start, j.jobid)):
        job.start = (job.start - t0).total_seconds()
        job.end = None if job.end is None else (job.end - t0).total_seconds()
        if job.benchmark:
            job.cpu_seconds = _benchmark_cpu(os.path.join(workdir, job.benchmark))
        out.append(job)
    for job in out:  # jobs still running when the log stops (a killed run) end with it
        if job.end is None:
            job.end, job.unfinished = (last - t0).total_seconds(), True
    end = max(j.end for j in out)
    started = min(0.0, (header - t0).total_seconds()) if header is not None else 0.0
    return Timeline(jobs=out, started=started, end=end, log=path)


def _benchmark_cpu(path: str) -> float | None:
    """``cpu_time`` of a Snakemake benchmark TSV (its last row), or None when absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        return float(rows[-1]["cpu_time"])
    except (OSError, KeyError, IndexError, ValueError, TypeError):
        return None


def plot_timeline(timeline: Timeline, output: str) -> str:
    """One bar per job (lanes packed: a job takes the first lane free at its start), coloured by
    stage, the critical path outlined, failed and unfinished jobs hatched; PNG or SVG by ``output``'s extension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lanes = timeline.lanes()
    critical = {id(j) for j in timeline.critical_path()}
    n = max(lanes) + 1
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.5 * n))
    span = timeline.end * 1.01 + 4 - min(timeline.started, 0)
    pixels_per_second = 12 * 0.85 * 110 / span
    for job, lane in zip(timeline.jobs, lanes):
        width = max(job.duration, 0.6)
        ax.barh(lane, width, left=job.start, height=0.8, color=COLOURS.get(job.stage, "#bcbd22"),
                edgecolor="black" if id(job) in critical else "white", linewidth=1.6 if id(job) in critical else 0.5,
                hatch="//" if job.failed or job.unfinished else None)
        label = job.label(timeline.several_seeds)
        if width * pixels_per_second >= 5.0 * len(label) + 6:  # the label fits in the bar (7 pt text)
            ax.text(job.start + width / 2, lane, label, ha="center", va="center", fontsize=7, clip_on=True)
    if timeline.started < 0:
        ax.barh(-1, -timeline.started, left=timeline.started, height=0.6, color=STARTUP_COLOUR, edgecolor="white")
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"lane {i + 1}" for i in range(n)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(timeline.started, 0) - 2, timeline.end * 1.01 + 2)
    ax.set_xlabel("seconds since the first job")
    ax.grid(axis="x", alpha=0.3)
    stages = [s for s in STAGE_ORDER if any(j.stage == s for j in timeline.jobs)]
    stages += sorted({j.stage for j in timeline.jobs} - set(stages))
    handles = [Patch(color=COLOURS.get(s, "#bcbd22"), label=s) for s in stages]
    if timeline.started < 0:
        handles.append(Patch(color=STARTUP_COLOUR, label="Snakemake start-up"))
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=1.6, label="critical path"))
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles) if len(handles) <= 8 else -(-len(handles) // 2),
               fontsize=8, frameon=False)  # below the figure: savefig's tight box takes it in
    ax.set_title(f"{len(timeline.jobs)} jobs, {_mmss(timeline.wall)} from Snakemake's start "
                 f"({os.path.basename(timeline.log)})", fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return output
