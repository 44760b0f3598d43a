"""The GPU check's pieces where no GPU is at hand: the figures script in --smoke form (the same code
at toy sizes on the CPU) and the check script's command line."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from workflow_support import REPO, base_env


@pytest.mark.slow
def test_gpu_figures_smoke_runs_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/gpu_figures.py", "--smoke", "--output-dir", str(tmp_path)],
                          cwd=REPO, env={**base_env(), "OMP_NUM_THREADS": "1", "MASQCLIP_CACHE": str(tmp_path / "c")},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "gpu_figures.json").read_text())
    assert result["header"]["smoke"] and result["header"]["device"] == "cpu"
    rows = result["rows"]
    assert {r["figure"] for r in rows} == {"teacher step", "MasQ head", "evaluation"}
    assert {r["precision"] for r in rows} >= {"fp32"}
    for r in rows:
        speed = r.get("images_per_s") or r.get("latency_ms")
        assert speed and math.isfinite(speed) and speed > 0 and r["peak_mib"] > 0, r
        assert r["ran_in"] in ("fp32", "bf16")
    assert all(math.isfinite(r["loss"]) for r in rows if r["figure"] == "teacher step")
    assert all(r["output_dtype"] == "float32" for r in rows if r["figure"] == "MasQ head")  # CLIP logits' input
    table = (tmp_path / "gpu_figures.md").read_text()
    assert table.count("\n| ") == len(rows) + 1  # header row + one per figure


def test_gpu_check_script_is_valid_bash_and_refuses_unknown_arguments():
    script = REPO / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    proc = subprocess.run([str(script), "--fast"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage: benchmarks/gpu_check.sh [--smoke]" in proc.stderr
