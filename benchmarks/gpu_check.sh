#!/usr/bin/env bash
# One prepared GPU check (about 7 of its 8 minutes on one H100/H200), for the lent device machine:
#   CPU machine:  bash benchmarks/fetch_wheels.sh
#   GPU machine:  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   anywhere:     bash benchmarks/gpu_check.sh --dry_run        # CPU, tiny sizes: the same code path in seconds
# 1. installs the missing dependencies from .whl (no registry there) and uses this checkout via PYTHONPATH;
# 2. runs the CUDA tests (pytest -m cuda; they skip without a GPU);
# 3. trains LIDC 2d fold 0 and a 3D toy 3d_fullres, Stage I then Stage II, GPU_CHECK_MINUTES (1) each, at the
#    planned configuration and precision, and writes iterations/s, samples/s, peak GPU memory and the projected
#    wall time of the planned schedule to $OUT/gpu_check.json (+ the logs beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
[ "${1:-}" = "--dry_run" ] && DRY_RUN=1
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
MINUTES=${GPU_CHECK_MINUTES:-1}
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
"$PY" -c "import diffoseg_auto, SimpleITK, batchgenerators, acvl_utils, dynamic_network_architectures, torch; \
print('gpu_check: torch', torch.__version__, 'cuda', torch.cuda.is_available())"

t0=$(date +%s)
set +e
"$PY" -m pytest tests -m cuda -q -p no:cacheprovider --timeout 300 > "$OUT/pytest_cuda.log" 2>&1
CUDA_TESTS_RC=$?
set -e
tail -n 3 "$OUT/pytest_cuda.log"
ARGS=(--out "$OUT/gpu_train.json" --minutes "$MINUTES")
[ "$DRY_RUN" = 1 ] && ARGS+=(--dry_run)
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
