#!/usr/bin/env bash
# Verify the cuda backend on a GPU machine, from the source tree, writing everything to $OUT.
#
#   benchmarks/gpu/run_all.sh [--dry-run] [STAGE ...]
#
# Stages (default: all, in this order):
#   env    environment: nvidia-smi, GPU, driver, CUDA runtime, CuPy/NumPy/Numba versions, date
#   tests  the whole test suite (cuda cases run wherever CuPy sees a GPU)      -> pytest.log
#   check  mlpx check --backend cuda (gradients vs finite differences/PyTorch) -> check.log
#   bench  mlpx bench --backend cuda, batches up to 65536, PyTorch if present  -> bench/
#   trace  batch-65536 training trace: host syncs inside steps, CUDA events     -> trace.json
#
# Each stage runs under its own time limit and its failure does not stop the later stages;
# stages.tsv records each stage's exit status and duration. OUT defaults to
# benchmarks/results/gpu-<date>. Stage limits (seconds) can be changed with
# MLPX_LIMIT_TESTS, MLPX_LIMIT_CHECK, MLPX_LIMIT_BENCH, MLPX_LIMIT_TRACE. On a machine that
# allows 10 minutes per command, run it as two commands:
#   benchmarks/gpu/run_all.sh env tests
#   benchmarks/gpu/run_all.sh check bench trace
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO" || exit 2
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
OUT="${OUT:-$REPO/benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M%S)}"
ALL_STAGES=(env tests check bench trace)
DRY=0
STAGES=()

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        -n|--dry-run) DRY=1 ;;
        env|tests|check|bench|trace) STAGES+=("$arg") ;;
        *) echo "run_all.sh: unknown stage or option '$arg' (stages: ${ALL_STAGES[*]})" >&2
           exit 2 ;;
    esac
done
[ ${#STAGES[@]} -eq 0 ] && STAGES=("${ALL_STAGES[@]}")

stage_cmd() {
    case "$1" in
        env) echo "(nvidia-smi || echo 'nvidia-smi failed') > '$OUT/nvidia-smi.txt' 2>&1;" \
                  "$PY benchmarks/gpu/sync_trace.py env --out '$OUT/env.json'" ;;
        tests) echo "$PY -m pytest -q -rs -p no:cacheprovider tests > '$OUT/pytest.log' 2>&1" ;;
        check) echo "$PY -m mlpx check --backend cuda > '$OUT/check.log' 2>&1" ;;
        bench) echo "$PY -m mlpx bench --backend cuda --dtype float32" \
                    "--batches 256,1024,4096,16384,65536 --rounds 3 --min-time 1.0" \
                    "--out '$OUT/bench' > '$OUT/bench.log' 2>&1" ;;
        trace) echo "$PY benchmarks/gpu/sync_trace.py trace --batch 65536 --out '$OUT/trace.json'" \
                    "> '$OUT/trace.log' 2>&1" ;;
    esac
}

stage_limit() {
    case "$1" in
        env) echo 60 ;;
        tests) echo "${MLPX_LIMIT_TESTS:-420}" ;;
        check) echo "${MLPX_LIMIT_CHECK:-120}" ;;
        bench) echo "${MLPX_LIMIT_BENCH:-240}" ;;
        trace) echo "${MLPX_LIMIT_TRACE:-150}" ;;
    esac
}

if [ "$DRY" -eq 1 ]; then
    echo "OUT=$OUT"
    for s in "${STAGES[@]}"; do
        echo "[$s] timeout $(stage_limit "$s") bash -c \"$(stage_cmd "$s")\""
    done
    exit 0
fi

mkdir -p "$OUT"
[ -f "$OUT/stages.tsv" ] || printf 'stage\texit\tseconds\n' > "$OUT/stages.tsv"
failed=0
for s in "${STAGES[@]}"; do
    start=$(date +%s)
    echo "== $s (limit $(stage_limit "$s") s)"
    timeout --kill-after=10 "$(stage_limit "$s")" bash -c "$(stage_cmd "$s")"
    rc=$?
    secs=$(( $(date +%s) - start ))
    printf '%s\t%s\t%s\n' "$s" "$rc" "$secs" >> "$OUT/stages.tsv"
    echo "   exit $rc after ${secs} s"
    [ "$rc" -ne 0 ] && failed=1
done
[ -f "$OUT/pytest.log" ] && tail -n 3 "$OUT/pytest.log"
echo "results in $OUT"
exit "$failed"
