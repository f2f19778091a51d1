#!/usr/bin/env bash
# One prepared GPU check (about 7 of its 8 minutes on one H100/H200), for the lent device machine:
#   CPU machine:  bash benchmarks/fetch_wheels.sh
#   GPU machine:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   quick:        run(command="bash benchmarks/gpu_check.sh --quick", carry=[".whl"], timeout_s=300)  # <= ~4 min
#   anywhere:     bash benchmarks/gpu_check.sh --dry_run [--quick]   # CPU, tiny sizes: the same code path in seconds
# 1. installs the missing dependencies from .whl (no registry there) and uses this checkout via PYTHONPATH;
# 2. runs the CUDA tests (pytest -m cuda; they skip without a GPU);
# 3. trains LIDC 2d fold 0 and a 3D toy 3d_fullres, Stage I then Stage II, GPU_CHECK_MINUTES (1) each, at the
#    planned configuration and precision, and writes iterations/s, samples/s, peak GPU memory and the projected
#    wall time of the planned schedule to $OUT/gpu_check.json (+ the logs beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0 QUICK=0
for arg in "$@"; do
    case "$arg" in
        --dry_run) DRY_RUN=1 ;;
        --quick) QUICK=1 ;;   # at most ~4 minutes on the device: the CUDA tests, 30 s per 2D stage, one 3D step
        *) echo "gpu_check: unknown option $arg (use --dry_run and/or --quick)" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
MINUTES=${GPU_CHECK_MINUTES:-$([ "$QUICK" = 1 ] && echo 0.5 || echo 1)}
export PYTHONUNBUFFERED=1
if [ "$DRY_RUN" = 1 ]; then
    PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    PY=python3
    [ -d .whl ] || { echo "gpu_check: .whl/ missing: run benchmarks/fetch_wheels.sh here and carry .whl" >&2; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/site"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" || true
fi
# deep import check: every module the project imports, and what they import at import time (blosc2 pulls
# pydantic, numexpr, ndindex; acvl_utils pulls cc3d), each exercised once, before any minute is spent on training
"$PY" benchmarks/import_check.py

t0=$(date +%s)
set +e
"$PY" -m pytest tests -m cuda -q -p no:cacheprovider --timeout 300 > "$OUT/pytest_cuda.log" 2>&1
CUDA_TESTS_RC=$?
set -e
tail -n 3 "$OUT/pytest_cuda.log"
ARGS=(--out "$OUT/gpu_train.json" --minutes "$MINUTES")
[ "$DRY_RUN" = 1 ] && ARGS+=(--dry_run)
[ "$QUICK" = 1 ] && ARGS+=(--quick)
"$PY" benchmarks/gpu_train_check.py "${ARGS[@]}" 2>&1 | tee "$OUT/gpu_train.log" | grep -E '^\{' || true
[ -f "$OUT/gpu_train.json" ] || { echo "gpu_check: training check failed, see $OUT/gpu_train.log" >&2; tail -n 20 "$OUT/gpu_train.log" >&2; exit 1; }
"$PY" - "$OUT" "$CUDA_TESTS_RC" "$(( $(date +%s) - t0 ))" <<'PYEOF'
import json, re, sys
out, rc, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = open(f"{out}/pytest_cuda.log").read()
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", log)}
train = json.load(open(f"{out}/gpu_train.json"))
report = {"cuda_tests": {"exit_code": rc, **counts}, **train, "total_seconds": seconds}
json.dump(report, open(f"{out}/gpu_check.json", "w"), indent=2)
print(json.dumps(report, indent=2))
PYEOF
