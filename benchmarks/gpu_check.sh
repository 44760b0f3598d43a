#!/usr/bin/env bash
# The GPU check: run it as it is on a machine with a CUDA GPU (under ~8 minutes on one GPU, nothing
# to edit), from any directory:
#
#   benchmarks/gpu_check.sh            # needs CUDA: a missing GPU is a failure, not a skip
#   benchmarks/gpu_check.sh --smoke    # the same steps at CPU size, to check the check itself
#
# Steps (each with its own log and time limit; the exit code is 0 only when all pass):
#   1. env      the device, driver and torch build
#   2. tests    `pytest -m gpu` with MASQCLIP_REQUIRE_GPU=1: every meta-architecture on CUDA, AMP
#               fp16/bf16 against fp32, CUDA against CPU, NCCL with 2 processes where 2 GPUs exist
#               (--smoke: tests/test_gpu_training.py on the CPU, MASQCLIP_GPU_TEST_DEVICE=cpu)
#   3. workflow the CI workflow config end to end with MODEL.DEVICE cuda for every model
#               (--smoke: a dry run of that config)
#   4. figures  benchmarks/gpu_figures.py: teacher R50 step at 1024 px (fp32 vs AMP, peak memory),
#               MasQ head ViT-L/14@336 with 100 masks, evaluation images/s (--smoke: toy sizes)
# Everything lands in $OUT (default results/gpu-check): <step>.log, gpu-tests.xml, ci-cuda.yaml,
# ci-tables/, gpu_figures.{json,md} and summary.txt.
set -uo pipefail

SMOKE=0
case "${1:-}" in
    --smoke) SMOKE=1 ;;
    "") ;;
    *) echo "usage: benchmarks/gpu_check.sh [--smoke]" >&2; exit 2 ;;
esac
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/results/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MPLBACKEND=Agg HF_HUB_OFFLINE=1
PY="${PYTHON:-python}"
CI_RESULTS=results/gpu-check-ci
: > "$OUT/summary.txt"
status=0

step() {  # step NAME LIMIT_S FUNCTION: run with a time limit, log to $OUT/NAME.log, record the outcome
    local name=$1 limit=$2 fn=$3 start rc
    start=$(date +%s)
    timeout "$limit" bash -c "set -uo pipefail; $fn" > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%-9s %s (exit %d, %d s)\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAILED)" "$rc" \
        "$(( $(date +%s) - start ))" | tee -a "$OUT/summary.txt"
    [ $rc -eq 0 ] || { status=1; tail -n 30 "$OUT/$name.log" >&2; }
}

env_info() {
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
    lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)" || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'devices', torch.cuda.device_count(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(), 'nccl', torch.distributed.is_nccl_available())"
}

gpu_tests() {
    if [ $SMOKE -eq 1 ]; then
        MASQCLIP_GPU_TEST_DEVICE=cpu "$PY" -m pytest tests/test_gpu_training.py -q -rs -p no:cacheprovider \
            --junitxml "$OUT/gpu-tests.xml"
    else
        MASQCLIP_REQUIRE_GPU=1 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml "$OUT/gpu-tests.xml"
    fi
}

ci_workflow() {  # config/ci.yaml with MODEL.DEVICE cuda in every stage, into a fresh results folder
    "$PY" - "$OUT/ci-cuda.yaml" "$CI_RESULTS" <<'PYCODE' || return 1
import sys
import yaml

out, results = sys.argv[1:3]
with open("config/ci.yaml", encoding="utf-8") as fh:
    config = yaml.safe_load(fh)
config.update(results=results, data_root=f"{results}/data", mlflow_tracking_uri=f"sqlite:///{results}/mlflow.db")
for setting in config["settings"].values():
    for stage in ("teacher", "student", "tuning"):
        setting[stage].setdefault("overrides", {})["MODEL.DEVICE"] = "cuda"
with open(out, "w", encoding="utf-8") as fh:
    yaml.safe_dump(config, fh, sort_keys=False)
PYCODE
    if [ $SMOKE -eq 1 ]; then
        "$PY" -m snakemake --cores 2 --configfile "$OUT/ci-cuda.yaml" --workflow-profile none -n
        return
    fi
    rm -rf "$CI_RESULTS"
    "$PY" -m snakemake --cores "$(nproc)" --configfile "$OUT/ci-cuda.yaml" --workflow-profile none \
        --printshellcmds --show-failed-logs || return 1
    rm -rf "$OUT/ci-tables" && cp -r "$CI_RESULTS/tables" "$OUT/ci-tables"
}

figures() {
    if [ $SMOKE -eq 1 ]; then
        "$PY" benchmarks/gpu_figures.py --smoke --output-dir "$OUT"
    else
        "$PY" benchmarks/gpu_figures.py --device cuda --output-dir "$OUT"
    fi
}

export OUT PY SMOKE CI_RESULTS
export -f env_info gpu_tests ci_workflow figures
start=$(date +%s)
step env 60 env_info
step tests 300 gpu_tests
step workflow 420 ci_workflow
step figures 300 figures
echo "gpu_check: $([ $status -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s; results in $OUT" \
    | tee -a "$OUT/summary.txt"
[ -f "$OUT/gpu_figures.md" ] && cat "$OUT/gpu_figures.md"
exit $status
